"""Rendering a Summary: rich tables and bar charts for people, JSON and CSV for programs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from detrdoctor.fmt import byte_size, number
from detrdoctor.memprofile.request import PointResult
from detrdoctor.memprofile.summary import Summary, used_bytes

BAR_WIDTH = 40
GROUP_ORDER = ["backbone", "encoder", "decoder", "heads", "other"]
CSV_FIELDS = [
    "batch_size",
    "amp",
    "mode",
    "status",
    "fits",
    "peak_bytes",
    "reserved_bytes",
    "device_bytes",
    "step_time_s",
    "images_per_s",
    "source",
    "device",
    "error",
]


def render_text(summary: Summary, console: Console) -> None:
    """The whole report, top to bottom: context, table, chart, AMP, recommendation, breakdown, notes."""
    console.print(_header(summary))
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    console.print(_table(summary))
    console.print(_chart(summary))
    savings = _savings(summary)
    if savings is not None:
        console.print(savings)
    console.print(_recommendation(summary))
    breakdown = _breakdown(summary)
    if breakdown is not None:
        console.print(breakdown)
    for note in summary.notes:
        console.print(f"[dim]{escape(note)}[/]")


def _header(s: Summary) -> Text:
    h, w = s.shape.hw
    source = {
        "worst": "the largest padded batch the profile's transforms can produce",
        "fixed": "fixed by --shape",
        "dataset": f"largest of {s.shape.distribution.get('batches')} real batches",
    }
    lines = [
        f"[bold]memprofile[/] {escape(s.profile)} — padded input {h}×{w} ({source[s.shape.source]})",
        f"device: {escape(s.device['description'])}",
    ]
    if s.target is not None:
        lines.append(
            f"planning for {escape(s.target.name)}: {byte_size(s.target.memory_bytes)}, "
            f"{s.safety_margin:.0%} safety margin → {byte_size(s.usable_bytes)} usable"
        )
    if s.shape.source == "dataset":
        d = s.shape.distribution
        lines.append(
            f"dataset batches of {d['batch_size']}: padded pixels min {d['pixels_min']:,}, "
            f"median {d['pixels_median']:,}, max {d['pixels_max']:,}"
        )
    return Text.from_markup("\n".join(lines))


def _fits_cell(s: Summary, r: PointResult) -> Text:
    if r.status == "oom":
        return Text("OOM", style="bold red")
    if r.status == "error":
        return Text("error", style="bold red")
    verdict = s.fits(r)
    if verdict is None:
        if r.mode == "measured" and r.device == "cpu":
            return Text("–")
        gpu = s.smallest_gpu(r)
        return Text(f"{gpu}+" if gpu else "none listed", style="green" if gpu else "red")
    return Text("yes", style="green") if verdict else Text("no", style="red")


CAPTIONS = {
    "cuda": "peak: peak allocated (torch.cuda.max_memory_allocated); reserved: peak held by the caching allocator; "
    "device: what the GPU gives the process (NVML), CUDA context included",
    "cpu": "peak: live tensor bytes at the peak; device: the measuring process's peak resident memory",
    "none": "all estimated, from a FakeTensor trace of the step and a model of the caching allocator — peak: "
    "peak allocated; reserved: peak held by the allocator; device: reserved plus an estimated CUDA context",
}


def _table(s: Summary) -> Table:
    estimated = s.primary_mode == "estimated"
    title = (
        "Estimated CUDA memory per training step"
        if estimated
        else f"Measured per training step on {s.device['name'] or s.device['type']}"
    )
    table = Table(title=title, title_justify="left", caption=CAPTIONS[s.device["type"]], caption_justify="left")
    for name in ("batch", "AMP", "peak", "reserved", "device", "step", "img/s"):
        table.add_column(name, justify="left" if name == "AMP" else "right")
    table.add_column("fits" if s.target is not None else "fits on", justify="left")
    estimates = {} if estimated else {(r.batch_size, r.amp): r for r in s.results if r.mode == "estimated"}
    errors = {(e["batch_size"], e["amp"]): e for e in s.estimate_errors()}
    if estimates:
        table.add_column("estimated peak", justify="right")
    if errors:
        table.add_column("error", justify="right")
    for r in s.primary():
        row: list[str | Text] = [
            str(r.batch_size),
            r.amp,
            byte_size(r.peak_bytes),
            byte_size(r.reserved_bytes),
            byte_size(used_bytes(r)) if r.status == "ok" else "–",
            f"{r.step_time_s * 1000:.0f} ms" if r.step_time_s else "–",
            number(r.images_per_s, ".1f", "–"),
            _fits_cell(s, r),
        ]
        if estimates:
            e = estimates.get((r.batch_size, r.amp))
            row.append(byte_size(e.peak_bytes) if e else "–")
        if errors:
            error = errors.get((r.batch_size, r.amp))
            row.append(
                Text(f"{error['error']:+.1%}", style="green" if error["within_target"] else "red") if error else "–"
            )
        table.add_row(*row)
    return table


def _chart(s: Summary) -> Group:
    """One bar per point: device memory against the largest, the usable limit marked with │."""
    used = [b for r in s.primary() if r.status == "ok" and (b := used_bytes(r)) is not None]
    scale = max(used + [s.usable_bytes or 0], default=0)
    parts: list[Text] = [
        Text("device memory by batch size" + (" (estimated)" if s.primary_mode == "estimated" else ""), style="bold")
    ]
    limit_col = round(BAR_WIDTH * s.usable_bytes / scale) if s.usable_bytes and scale else None
    for amp in s.amp_modes:
        parts.append(Text(amp, style="bold"))
        for r in s.primary(amp):
            line = Text(f"  {r.batch_size:>5} ")
            if r.status != "ok" or (r_used := used_bytes(r)) is None:
                line.append(r.status.upper(), style="bold red")
            else:
                n = max(1, round(BAR_WIDTH * r_used / scale)) if scale else 0
                bar = ["█"] * n + [" "] * (BAR_WIDTH - n)
                if limit_col is not None and limit_col < BAR_WIDTH:
                    bar[limit_col] = "│"
                line.append("".join(bar), style="red" if s.fits(r) is False else "green")
                line.append(f" {byte_size(used_bytes(r))}")
            parts.append(line)
    return Group(*parts)


def _savings(s: Summary) -> Table | None:
    rows = s.amp_savings()
    if not rows:
        return None
    table = Table(title="What AMP buys (relative to fp32)", title_justify="left")
    for name in ("batch", "AMP", "peak memory", "saved", "speed"):
        table.add_column(name, justify="right" if name != "AMP" else "left")
    for row in rows:
        speed = f"{row['speed_ratio']:.2f}×" if row["speed_ratio"] else "– (not measured)"
        table.add_row(
            str(row["batch_size"]),
            row["amp"],
            f"{row['memory_ratio']:.2f}×",
            byte_size(row["memory_saved_bytes"])
            if row["memory_saved_bytes"] >= 0
            else "−" + byte_size(-row["memory_saved_bytes"]),
            speed,
        )
    return table


def _recommendation(s: Summary) -> Text:
    lines = [Text("recommended batch size", style="bold")]
    if s.target is not None:
        for amp, best in s.max_batch_size().items():
            how = "searched" if amp in s.searches else "largest swept that fits"
            lines.append(
                Text(
                    f"  {amp}: {best if best else 'none fits'} ({how}, on {s.target.name} with "
                    f"{s.safety_margin:.0%} margin)"
                )
            )
    elif s.primary_mode == "estimated":
        for gpu, per_amp in s.fits_on().items():
            lines.append(Text(f"  {gpu:<10} " + ", ".join(f"{amp}: {b if b else '–'}" for amp, b in per_amp.items())))
        lines.append(
            Text("  (largest swept batch size that fits each GPU; --gpu-memory NAME|SIZE to plan for one)", style="dim")
        )
    else:
        lines.append(
            Text(
                "  nothing to fit into on the CPU: for a GPU, estimate with --gpu-memory (no --device cpu)", style="dim"
            )
        )
    return Text("\n").join(lines)


def _breakdown(s: Summary) -> Table | None:
    """Category × module group at the peak of the largest fitting point."""
    r = s.peak_point()
    if r is None:
        return None
    present = {g for groups in r.breakdown.values() for g in groups}
    columns = [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))
    unit, scale = ("GiB", 2**30) if (r.peak_bytes or 0) >= 2**30 else ("MiB", 2**20)
    table = Table(
        title=f"Where memory goes at the peak ({unit}): batch {r.batch_size}, {r.amp}, {r.mode}", title_justify="left"
    )
    table.add_column("")
    for g in [*columns, "total"]:
        table.add_column(g, justify="right")
    for category, groups in r.breakdown.items():
        if groups:
            cells = [f"{groups[g] / scale:.2f}" if g in groups else "" for g in columns]
            table.add_row(category.replace("_", " "), *cells, f"{sum(groups.values()) / scale:.2f}")
    return table


def render_json(summary: Summary) -> str:
    return json.dumps(summary.to_json(), indent=2)


def write_csv(summary: Summary, path: Path) -> None:
    """One row per point, measured and estimated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in summary.to_json()["results"]:
            writer.writerow(row)
