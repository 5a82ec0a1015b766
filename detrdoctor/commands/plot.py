"""`detrdoctor plot`: runs' curves overlaid by step: a figure file (matplotlib), or a summary in the terminal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from detrdoctor.options import Json

if TYPE_CHECKING:
    from rich.console import JustifyMethod

    from detrdoctor.runs import Run

SPARK_WIDTH = 24
EVENTS_SHOWN = 8  # per run in the terminal; --json has them all


@dataclass(frozen=True, kw_only=True)
class PlotOptions:
    """The flags of `plot`."""

    run_dirs: Annotated[
        list[str], typer.Argument(help="Run folders (or their metrics.jsonl) to overlay, aligned by step.")
    ]
    out: Annotated[str | None, typer.Option(help="Write the figure to FILE.png or .svg (needs detrdoctor[plot]).")] = (
        None
    )
    smooth: Annotated[int, typer.Option(help="Trailing mean over N logged records for losses and rates (1: raw).")] = 1
    json_output: Json = False


def resampled(values: list[float], width: int) -> list[float]:
    """The whole series in at most `width` values (means of equal stretches), so a sparkline spans the run."""
    if len(values) <= width:
        return values
    edges = [round(i * len(values) / width) for i in range(width + 1)]
    return [sum(values[a:b]) / (b - a) for a, b in zip(edges[:-1], edges[1:])]


def render_run(run: Run, summary: dict[str, Any], smooth: int) -> list:
    """A run's table (series, trend over the run, last and best values) and its events."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from detrdoctor.dashboard.render import SEVERITY_STYLE, num, sparkline
    from detrdoctor.runs import SERIES, smoothed

    evals = summary["series"].get("AP", {}).get("points", 0)
    table = Table(
        title=f"[bold]{escape(run.name)}[/] — {summary['steps']} steps, {evals} evaluations, {len(run.events)} events",
        title_justify="left",
        box=None,
        pad_edge=False,
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("series", "left"),
        ("over the run", "left"),
        ("last", "right"),
        ("best", "right"),
        ("at step", "right"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    for series in SERIES:
        entry = summary["series"].get(series.key)
        if entry is None:
            continue
        values = [v for _, v in run.points[series.key]]
        trend = sparkline(resampled(smoothed(values, smooth), SPARK_WIDTH), SPARK_WIDTH, log=series.log)
        shown = (lambda v: f"{v:.0%}") if series.key == "data_wait" else num
        table.add_row(
            series.label,
            Text(trend, style="cyan"),
            shown(entry["last"]),
            shown(entry["best"]) if "best" in entry else "—",
            str(entry.get("best_step", "")),
        )
    lines: list = [table]
    if run.best:
        best = run.best
        lines.append(Text(f"  best.pth: {best['metric']} {num(best['value'])} at step {best['step']}", style="bold"))
    hidden = len(run.events) - EVENTS_SHOWN
    if hidden > 0:
        lines.append(Text(f"  … {hidden} earlier events (all in --json)", style="dim"))
    for event in run.events[-EVENTS_SHOWN:]:
        style = SEVERITY_STYLE.get(event.get("severity", "info"), "")
        lines.append(
            Text.from_markup(
                f"  [{style}]{escape(str(event.get('kind')))}[/] step {event.get('step')}: "
                f"{escape(str(event.get('message', '')))}"
            )
        )
    return lines


def run_plot(options: PlotOptions) -> int:
    """Plot runs from their metrics.jsonl: losses, AP, gradient norm with watchdog events, learning rate, throughput.

    Exit 0, or 2 for a missing extra or bad flag, 1 for a folder without metrics.
    """
    from rich.console import Console

    from detr.errors import ConfigError
    from detrdoctor.runs import load_runs, run_summary

    if options.smooth < 1:
        raise ConfigError(f"--smooth must be at least 1 (1: no smoothing), got {options.smooth}")
    out = Path(options.out) if options.out else None
    if out is not None and out.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"--out {options.out}: give a .png or .svg file name")
    runs = load_runs(options.run_dirs)
    for run in runs:
        if run.note:
            Console(stderr=True, highlight=False).print(f"note: {run.note}", soft_wrap=True, markup=False)
    summaries = [run_summary(run) for run in runs]
    if out is not None:
        from detrdoctor.figure import draw_runs

        out.parent.mkdir(parents=True, exist_ok=True)
        draw_runs(runs, out, options.smooth)
    if options.json_output:
        print(json.dumps({"runs": summaries, "figure": str(out) if out else None, "smooth": options.smooth}))
        return 0
    console = Console(highlight=False)
    if out is not None:
        console.print(
            f"wrote [bold]{out}[/] ({len(runs)} run{'s' if len(runs) != 1 else ''}, "
            f"{max(run.last_step for run in runs)} steps)",
            soft_wrap=True,
        )
        return 0
    for run, summary in zip(runs, summaries):
        for line in render_run(run, summary, options.smooth):
            console.print(line)
        console.print()
    return 0
