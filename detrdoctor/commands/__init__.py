"""The body of every `detrdoctor` command: one module each, with the command's typed options.

`cli.py` declares the flags and their defaults, builds the options dataclass and calls `run_<command>`.
Modules here import torch only inside their functions, so `detrdoctor --help` stays instant.
"""
