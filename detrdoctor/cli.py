"""The `detrdoctor` command line: registers each command; its flags are its options dataclass (options.py).

Nothing here imports torch at module level, so `detrdoctor --help` stays instant.
"""

from __future__ import annotations

import sys

import typer

from detrdoctor.commands.convert import run_convert
from detrdoctor.commands.env_check import run_env_check
from detrdoctor.commands.evaluate import run_evaluate
from detrdoctor.commands.export import run_export
from detrdoctor.commands.loader_bench import run_loader_bench
from detrdoctor.commands.memprofile import run_memprofile
from detrdoctor.commands.plot import run_plot
from detrdoctor.commands.predict import run_predict
from detrdoctor.commands.profiles import run_profiles
from detrdoctor.commands.stack import run_stack
from detrdoctor.commands.synth import run_synth
from detrdoctor.commands.train import run_train
from detrdoctor.commands.triage import run_triage
from detrdoctor.options import command, command_name

app = typer.Typer(
    name="detrdoctor",
    help="Train DETR object detectors and diagnose what goes wrong: environment, memory, data loading, gradients.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def main(ctx: typer.Context) -> None:
    """With no command, `detrdoctor` prints its help (exit 0): `detrdoctor train` runs the demo."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


# In the order `detrdoctor --help` lists them.
for run in (
    run_train,
    run_evaluate,
    run_predict,
    run_export,
    run_plot,
    run_profiles,
    run_synth,
    run_convert,
    run_env_check,
    run_memprofile,
    run_loader_bench,
    run_triage,
    run_stack,
):
    app.command(command_name(run))(command(run))

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
