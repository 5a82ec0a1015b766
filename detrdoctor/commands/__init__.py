"""The body of every `detrdoctor` command: one module each, with the command's typed options.

Each module's options dataclass declares the command's flags (detrdoctor/options.py explains how), and its
`run_<command>` (whose docstring is the command's help) orchestrates the modules below; `cli.py` registers
the pair. Nothing below imports from here. Modules here import torch only inside their functions, so
`detrdoctor --help` stays instant.
"""
