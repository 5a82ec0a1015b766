"""Rendering a loader-bench report: rich table, terminal bar chart, recommendation, or JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from detrdoctor.fmt import number
from detrdoctor.loaderbench.results import Recommendation, SettingResult, Starvation
from detrdoctor.loaderbench.stages import STAGES

BAR_WIDTH = 40


@dataclass
class Report:
    """Everything the command found; `to_json` is the `--json` output."""

    setup: dict[str, Any]
    results: list[SettingResult]
    starvation: Starvation
    recommendation: Recommendation
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "setup": self.setup,
            "results": [dataclasses.asdict(r) for r in self.results],
            "recommendation": dataclasses.asdict(self.recommendation),
            "starvation": dataclasses.asdict(self.starvation),
            "notes": self.notes,
        }


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f}"


def _label(r: SettingResult) -> str:
    return f"{r.num_workers} workers, pin {r.pin_memory}"


def _table(title: str, headers: list[str], rows: list[list[str | Text]]) -> Table:
    """A compact table whose cells never wrap (headers carry their own line breaks to stay narrow)."""
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, header in enumerate(headers):
        width = max((len(str(row[i])) for row in rows if i < len(row)), default=0)
        table.add_column(header, justify="left" if header == "pin" else "right", min_width=width, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def results_table(report: Report) -> Table:
    """Throughput, start-up, CPU, memory and the model's wait per setting."""
    waits = {(s.num_workers, s.pin_memory): s for s in report.starvation.per_setting}
    rows: list[list[str | Text]] = []
    for r in report.results:
        if not r.ok:
            rows.append([str(r.num_workers), r.pin_memory, "", Text("crashed", style="bold red")])
            continue
        wait = waits[(r.num_workers, r.pin_memory)]
        wait_cell = (
            Text("n/a")
            if wait.starved is None
            else Text(f"{wait.wait_fraction:.0%}", style="red" if wait.starved else "green")
        )
        rows.append(
            [
                str(r.num_workers),
                r.pin_memory,
                f"{r.first_batch_s:.2f} s",
                f"{r.images_per_s:.1f}±{r.images_per_s_spread:.1f}",
                f"{r.batches_per_s:.2f}",
                number(r.cpu_percent, ".0f", "n/a"),
                _mib(r.peak_rss_bytes),
                _mib(r.pss_bytes),
                wait_cell,
            ]
        )
    headers = [
        "workers",
        "pin",
        "first\nbatch",
        "images/s",
        "batches/s",
        "CPU\n%",
        "peak RSS\nΣ MiB",
        "PSS\nMiB",
        "model\nwaits",
    ]
    return _table("DataLoader throughput", headers, rows)


def stages_table(report: Report) -> Table | None:
    """Per-stage cost per image inside the workers (and the host→device copy per batch with a GPU)."""
    timed = [r for r in report.results if r.ok and r.stages_ms]
    if not timed:
        return None
    has_h2d = any(r.h2d_copy_ms is not None for r in timed)
    rows = [
        [
            str(r.num_workers),
            r.pin_memory,
            *(number(r.stages_ms.get(s), ".2f", "n/a") for s in STAGES),
            *((number(r.h2d_copy_ms, ".2f", "n/a"),) if has_h2d else ()),
        ]
        for r in timed
    ]
    headers = ["workers", "pin", *STAGES, *(["H2D copy\nms/batch"] if has_h2d else [])]
    return _table("Cost per image inside the workers (ms)", headers, rows)


def bar_chart(report: Report) -> Text:
    """images/s per setting as bars; `┃` marks the rate the model consumes when the step time is known."""
    ok = [r for r in report.results if r.ok]
    step = report.starvation.step_time_s
    batch_size = report.setup.get("batch_size")
    demand = batch_size / step if step and batch_size else None
    scale = max([r.images_per_s for r in ok] + ([demand] if demand else [])) or 1.0
    label_width = max((len(_label(r)) for r in report.results), default=0)
    starved = {(s.num_workers, s.pin_memory): s.starved for s in report.starvation.per_setting}
    text = Text()
    for r in report.results:
        text.append(f"{_label(r):>{label_width}} ")
        if not r.ok:
            text.append("crashed\n", style="bold red")
            continue
        filled = max(1, round(BAR_WIDTH * (r.images_per_s or 0.0) / scale))  # set on every completed setting
        cells = ["█"] * filled + [" "] * (BAR_WIDTH - filled)
        marker = None if demand is None else min(BAR_WIDTH - 1, round(BAR_WIDTH * demand / scale))
        colour = {True: "red", False: "green", None: "cyan"}[starved[(r.num_workers, r.pin_memory)]]
        for i, cell in enumerate(cells):
            text.append("┃" if i == marker else cell, style="bold yellow" if i == marker else colour)
        text.append(f" {r.images_per_s:.1f} images/s\n")
    if demand is not None:
        text.append(
            f"{'':>{label_width}} ┃ the model consumes {demand:.1f} images/s ({batch_size} per {step:.3g} s step)\n",
            style="yellow",
        )
    return text


def render(report: Report, console: Console) -> None:
    setup = report.setup
    console.print(
        f"[bold]loader-bench[/] {escape(setup['dataset'])} dataset, {setup['split']} split ({setup['images']} "
        f"images), batch size {setup['batch_size']}, up to {setup['timed_batches']} timed batches or "
        f"{setup['budget_s']:g} s per setting, {setup['cpu_count']} CPUs"
        + (f", GPU {escape(setup['gpu'])}" if setup["gpu"] else ", no GPU")
    )
    console.print(results_table(report))
    stages = stages_table(report)
    if stages is not None:
        console.print(stages)
    console.print(bar_chart(report))
    for r in report.results:
        if not r.ok:
            console.print(f"[bold red]✗ {_label(r)}:[/] {escape(r.error or '')} — [bold]fix:[/] {escape(r.fix or '')}")
        elif r.corrupt_images:
            console.print(f"[yellow]! {_label(r)}: {r.corrupt_images} unreadable images replaced by other samples[/]")
    st = report.starvation
    if st.step_time_s is not None:
        console.print(f"model step: {st.step_time_s:.3f} s ({st.step_time_source} on {st.device})")
    rec = report.recommendation
    style = "bold red" if rec.starved else ("bold green" if rec.num_workers is not None else "bold red")
    console.print(f"[{style}]recommendation[/]")
    for line in rec.advice.splitlines():
        console.print(f"  {escape(line)}")
    for note in [*report.notes, "peak RSS Σ counts pages shared after fork once per process; PSS splits them"]:
        console.print(f"[dim]note: {escape(note)}[/]")


def dumps(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2)
