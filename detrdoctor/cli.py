"""The `detrdoctor` command line: registers each command; its flags are its options dataclass (options.py).

Nothing here imports torch at module level, so `detrdoctor --help` stays instant.
"""

from __future__ import annotations

import sys

import typer

from detrdoctor.commands.convert import ConvertOptions, run_convert
from detrdoctor.commands.env_check import EnvCheckOptions, run_env_check
from detrdoctor.commands.evaluate import EvaluateOptions, run_evaluate
from detrdoctor.commands.export import ExportOptions, run_export
from detrdoctor.commands.loader_bench import LoaderBenchOptions, run_loader_bench
from detrdoctor.commands.memprofile import MemprofileOptions, run_memprofile
from detrdoctor.commands.plot import PlotOptions, run_plot
from detrdoctor.commands.predict import PredictOptions, run_predict
from detrdoctor.commands.profiles import ProfilesOptions, run_profiles
from detrdoctor.commands.stack import StackOptions, run_stack
from detrdoctor.commands.synth import SynthOptions, run_synth
from detrdoctor.commands.train import TrainOptions, run_train
from detrdoctor.commands.triage import TriageOptions, run_triage
from detrdoctor.options import command

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


app.command("train")(command(TrainOptions, run_train))
app.command("evaluate")(command(EvaluateOptions, run_evaluate))
app.command("predict")(command(PredictOptions, run_predict))
app.command("export")(command(ExportOptions, run_export))
app.command("plot")(command(PlotOptions, run_plot))
app.command("profiles")(command(ProfilesOptions, run_profiles))
app.command("synth")(command(SynthOptions, run_synth))
app.command("convert")(command(ConvertOptions, run_convert))
app.command("env-check")(command(EnvCheckOptions, run_env_check))
app.command("memprofile")(command(MemprofileOptions, run_memprofile))
app.command("loader-bench")(command(LoaderBenchOptions, run_loader_bench))
app.command("triage")(command(TriageOptions, run_triage))
app.command("stack")(command(StackOptions, run_stack))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
