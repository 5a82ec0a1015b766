"""env-check's parts: collect the facts (collect.py, probes.py), judge them (rules.py), render the verdict (render.py).

The command itself is `detrdoctor.commands.env_check`. This package imports nothing at start-up: the probes
run it as `python -m`, and they must start without loading rich.
"""
