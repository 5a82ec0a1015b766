"""Pure functions from a dashboard `View` to rich renderables; sized to the terminal, nothing else read.

Every panel line is a single no-wrap Text, so a panel's height is known before rich draws it and the
whole dashboard can be fitted to the terminal (80×24 included) by choosing how many events to show.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.panel import Panel
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from detrdoctor.dashboard.state import (
    LOSS_KEYS,
    SPLIT_KEYS,
    View,
    clip_ratio,
    clipped_fraction,
    data_wait_share,
    eta_s,
    images_per_s,
    latest_gradient_warning,
    recent_mean,
    wait_level,
)
from detrdoctor.dashboard.telemetry import GpuReading, Telemetry
from detrdoctor.fmt import finite_floats

BLOCKS = "▁▂▃▄▅▆▇█"
SEVERITY_STYLE = {"info": "dim", "warning": "yellow", "error": "bold red"}
LEVEL_STYLE = {"ok": "green", "warn": "yellow", "bad": "bold red"}
SPLIT_STYLE = {"data": "red", "forward": "cyan", "backward": "blue", "optimizer": "magenta", "other": "bright_black"}
SPLIT_LABEL = {"data": "data", "forward": "fwd", "backward": "bwd", "optimizer": "opt", "other": "rest"}
LOSS_LABEL = {key: "total" if key == "loss" else key.removeprefix("loss_") for key in LOSS_KEYS}
TWO_COLUMNS_MIN_WIDTH = 76
FILE_KINDS = ("stall", "profile_cpu")  # events whose `path` the summary lists
SUMMARY_WARNINGS = 5
GIB = 1024**3


# ----------------------------------------------------------------------------- formatting


def sparkline(values: Sequence[float | None], width: int, log: bool = False) -> str:
    """The last `width` values as ▁..█ scaled to their own range; missing or non-finite values are blank."""
    if width <= 0:
        return ""
    shown = list(values)[-width:]
    scaled = [(math.log10(v) if v > 0 else None) if (log and v is not None) else v for v in shown]
    good = finite_floats(scaled)
    if not good:
        return " " * len(shown)
    low, high = min(good), max(good)
    span = high - low
    chars = []
    for v in scaled:
        if v is None or not math.isfinite(v):
            chars.append(" ")
        else:
            level = round((v - low) / span * (len(BLOCKS) - 1)) if span > 0 else len(BLOCKS) // 2
            chars.append(BLOCKS[level])
    return "".join(chars)


def num(value: float | None) -> str:
    """A loss-like number in at most 7 characters."""
    if value is None or not math.isfinite(value):
        return "—"
    magnitude = abs(value)
    if magnitude >= 1e4 or (0 < magnitude < 1e-3):
        return f"{value:.2e}"
    return f"{value:.1f}" if magnitude >= 100 else f"{value:.2f}" if magnitude >= 10 else f"{value:.3f}"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


def gib(value: int | None, decimals: int = 1) -> str:
    return "—" if value is None else f"{value / GIB:.{decimals}f}"


def percent(fraction: float | None) -> str:
    return "—" if fraction is None else f"{100 * fraction:.0f}%"


def bar(fraction: float | None, width: int, style: str = "cyan") -> Text:
    """A one-line gauge: filled and empty cells."""
    filled = 0 if fraction is None else round(max(0.0, min(1.0, fraction)) * width)
    return Text.assemble(("━" * filled, style), ("━" * (width - filled), "bright_black"))


def line(*parts: str | tuple[str, str] | Text) -> Text:
    """One no-wrap line that ends in an ellipsis when the panel is too narrow."""
    text = Text.assemble(*parts)
    text.no_wrap, text.overflow = True, "ellipsis"
    return text


def panel(lines: list[Text], title: str | Text, width: int, height: int | None = None) -> Panel:
    return Panel(
        Group(*lines),
        title=title,
        title_align="left",
        width=width,
        height=height or len(lines) + 2,
        border_style="bright_black",
        padding=(0, 1),
    )


# ----------------------------------------------------------------------------- panels


def header(view: View, width: int) -> list[Text]:
    info = view.info
    if info is None:
        return [line(("detrdoctor train", "bold"), " · starting…")]
    first = line(
        ("detrdoctor", "bold"),
        f" · {info.run_name} · ",
        (info.profile, "cyan"),
        f" · {info.device} · world {info.world_size} · amp {info.amp}",
    )
    total = max(info.total_steps, 1)
    phase = {
        "evaluating": ("evaluating", "bold yellow"),
        "done": ("done", "bold green"),
        "stopped": ("stopped", "bold red"),
    }.get(view.phase)
    status = Text.assemble(
        f" step {view.step}/{info.total_steps} · epoch {view.epoch + 1}/{info.epochs} · "
        f"{duration(view.elapsed_s)} · ETA {duration(eta_s(view))}",
        *((" · ", phase) if phase else ()),
    )
    bar_width = max(0, min(30, width - len(status.plain)))
    return [first, line(bar(view.step / total, bar_width, "green"), status)]


def losses_panel(view: View, width: int) -> list[Text]:
    spark_width = max(0, width - 4 - 24)
    lines = []
    for key, label in LOSS_LABEL.items():
        series = view.losses.get(key, ())
        current = finite_floats(series[-1:])
        lines.append(
            line(
                f"{label:<6}",
                (f"{num(current[0] if current else None):>8}", "bold"),
                (f" ~{num(recent_mean(series)):<7} ", "dim"),
                (sparkline(series, spark_width), "cyan"),
            )
        )
    ev = view.last_eval or {}
    lines.append(
        line(
            "EMA AP " if ev.get("ema") else "AP ",
            (num(_get(ev, "AP")), "bold green"),
            " · AP50 ",
            (num(_get(ev, "AP50")), "bold green"),
            f" · lr {view.lr:.1e}" if view.lr is not None else "",
        )
    )
    return lines


def _get(mapping: dict[str, Any], key: str) -> float | None:
    value = mapping.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def gradients_panel(view: View, width: int) -> list[Text]:
    norms = view.grad_norms
    current = finite_floats(norms[-1:])
    spark_width = max(0, width - 4 - 24)
    lines = [
        line(
            f"{'norm':<6}",
            (f"{num(current[0] if current else None):>8}", "bold"),
            (f" ~{num(recent_mean(norms)):<7} ", "dim"),
            (sparkline(norms, spark_width, log=True), "magenta"),
        )
    ]
    ratio, fraction = clip_ratio(view), clipped_fraction(view)
    max_norm = view.info.clip_max_norm if view.info else 0.0
    clip = (
        ("clipping off", "dim")
        if max_norm <= 0
        else f"clip at {max_norm:g}"
        if ratio is None
        else f"clipped {percent(fraction)} ×{ratio:.2g}"
    )
    skipped = (f" · skipped {view.skipped_steps}", "bold yellow" if view.skipped_steps else "")
    scale = f" · scale {view.loss_scale:.0f}" if view.loss_scale is not None else ""
    lines.append(line(clip, skipped, scale))
    event = latest_gradient_warning(view)
    if event is None:
        lines.append(line(("✓ no gradient warnings", "green")))
    else:
        style = SEVERITY_STYLE.get(event.severity, "")
        module = f" · {event.fields['module']}" if event.fields.get("module") else ""
        lines.append(line((f"⚠ step {event.step} {event.kind}{module}", style + " reverse")))
    return lines


def throughput_panel(view: View, width: int) -> list[Text]:
    inner = max(1, width - 4)
    ips = images_per_s(view)
    split = view.split
    rates = [n / t if t > 0 else None for n, t in zip(view.images, view.step_times)]
    head = f"{ips:.1f} img/s · {split['step']:.3f} s/step " if ips is not None and split else "waiting for step 1 "
    lines = [line((head, "bold"), (sparkline(rates, inner - len(head)), "green"))]
    if not split:
        return lines + [line(""), line(""), line("")]
    total = sum(split[k] for k in SPLIT_KEYS) or 1.0
    cells, used = [], 0
    for i, key in enumerate(SPLIT_KEYS):
        n = inner - used if i == len(SPLIT_KEYS) - 1 else round(split[key] / total * inner)
        n = max(0, min(n, inner - used))
        cells.append(("█" * n, SPLIT_STYLE[key]))
        used += n
    lines.append(line(*cells))
    legend: list[str | tuple[str, str]] = []
    for key in SPLIT_KEYS[1:]:  # data wait gets its own line below
        legend += [" " * bool(legend), ("■", SPLIT_STYLE[key]), f"{SPLIT_LABEL[key]} {percent(split[key] / total)}"]
    lines.append(line(*legend))
    share = data_wait_share(view)
    level = wait_level(share)
    verdict = {"ok": "compute-bound", "warn": "waits for data", "bad": "starving: detrdoctor loader-bench"}[level]
    lines.append(line(("■", SPLIT_STYLE["data"]), "data wait ", (f"{percent(share)} {verdict}", LEVEL_STYLE[level])))
    return lines


def _gpu_line(gpu: GpuReading, width: int) -> Text:
    """`0 util  97% mem 31/80G 67°C 412W`, with gauges when the panel is wide enough."""
    util = gpu.util_percent
    mem = gpu.mem_used / gpu.mem_total if gpu.mem_used is not None and gpu.mem_total else None
    temp = "" if gpu.temperature_c is None else f" {gpu.temperature_c:.0f}°C"
    temp_style = "bold red" if (gpu.temperature_c or 0) >= 85 else "yellow" if (gpu.temperature_c or 0) >= 75 else ""
    power = "" if gpu.power_w is None else f" {gpu.power_w:.0f}W"
    gauge = max(0, min(12, (width - 4 - 36) // 2))
    return line(
        f"{gpu.index} util ",
        ("   —" if util is None else f"{util:3.0f}%", "bold"),
        " ",
        bar(None if util is None else util / 100, gauge, "green"),
        f" mem {gib(gpu.mem_used, 0)}/{gib(gpu.mem_total, 0)}G ",
        bar(mem, gauge, "cyan"),
        (temp, temp_style),
        power,
    )


def system_panel(telemetry: Telemetry | None, width: int) -> tuple[str, list[Text]]:
    """(title, lines): the GPUs with torch's allocator when there are any, else CPU and RAM."""
    if telemetry is None:
        return "system", [line(("reading…", "dim"))]
    host, lines = telemetry.host, []
    if telemetry.gpus:
        names = {g.name for g in telemetry.gpus}
        title = f"GPU · {len(telemetry.gpus)}× {names.pop()}" if len(names) == 1 else "GPUs"
        lines = [_gpu_line(g, width) for g in telemetry.gpus]
        mem = telemetry.torch_memory
        if mem is not None:
            lines.append(line(f"alloc {gib(mem.allocated)} · resv {gib(mem.reserved)} · peak {gib(mem.peak)}G"))
        if host is not None:
            lines.append(
                line(
                    (
                        f"CPU {_pct(host.cpu_percent)} of {host.cpus} · "
                        f"RAM {gib(host.ram_used, 0)}/{gib(host.ram_total, 0)} GiB",
                        "dim",
                    )
                )
            )
        return title, lines
    title = "CPU" + (f" · {telemetry.note}" if telemetry.note else "")
    if host is None:
        return title, [line(("no readings", "dim"))]
    ram = host.ram_used / host.ram_total if host.ram_used is not None and host.ram_total else None
    cpu = f"CPU {_pct(host.cpu_percent):>4} of {host.cpus} "
    ram_label = f"RAM {gib(host.ram_used)}/{gib(host.ram_total)} GiB "
    gauge = max(0, width - 4 - max(len(cpu), len(ram_label)))
    return title, [
        line(cpu.ljust(width - 4 - gauge), bar(None if host.cpu_percent is None else host.cpu_percent / 100, gauge)),
        line(ram_label.ljust(width - 4 - gauge), bar(ram, gauge, "green")),
        line(f"trainer RSS {gib(host.rss)} GiB"),
    ]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}%"


def events_panel(view: View, count: int) -> tuple[Text, list[Text]]:
    counts = view.severity_counts
    title = Text("events")
    for severity in ("warning", "error"):
        if counts.get(severity):
            title.append(" · ").append(
                f"{counts[severity]} {severity}{'s' * (counts[severity] != 1)}", SEVERITY_STYLE[severity]
            )
    shown = view.events[-count:] if count > 0 else ()
    lines = [
        line(
            (f"{e.step:>6} ", "dim"),
            (f"{e.kind} ", SEVERITY_STYLE.get(e.severity, "") + " bold"),
            (e.message, SEVERITY_STYLE.get(e.severity, "")),
        )
        for e in shown
    ]
    if not lines and count > 0:
        lines = [line(("no events yet", "dim"))]
    return title, lines


# ----------------------------------------------------------------------------- the screen


class SideBySide:
    """Two columns of fixed width. A Table would measure every cell first, which doubles the cost of
    each refresh; the widths here are already known."""

    def __init__(self, left: RenderableType, right: RenderableType, left_width: int, right_width: int):
        self.columns = ((left, left_width), (right, right_width))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rendered = [console.render_lines(r, options.update(width=w, height=None), pad=True) for r, w in self.columns]
        height = max(len(lines) for lines in rendered)
        for (_, width), lines in zip(self.columns, rendered):
            lines.extend([Segment(" " * width)] for _ in range(height - len(lines)))
        for left, right in zip(*rendered):
            yield from left
            yield from right
            yield Segment.line()


def dashboard(view: View, width: int, height: int) -> RenderableType:
    """The whole live screen, at most `height - 1` lines (the last terminal line stays free for the cursor)."""
    top = header(view, width)
    if width >= TWO_COLUMNS_MIN_WIDTH:
        left_w = width // 2
        right_w = width - left_w
        left = [losses_panel(view, left_w), gradients_panel(view, left_w)]
        sys_title, sys_lines = system_panel(view.telemetry, right_w)
        right = [throughput_panel(view, right_w), sys_lines]
        left_h = sum(len(p) + 2 for p in left)
        right_h = sum(len(p) + 2 for p in right)
        body_h = max(left_h, right_h)
        # The last panel of the shorter column stretches so both columns end on the same line.
        left_panels = [
            panel(left[0], "losses", left_w),
            panel(left[1], "gradients", left_w, len(left[1]) + 2 + body_h - left_h),
        ]
        right_panels = [
            panel(right[0], f"throughput · {view.split_source}", right_w),
            panel(sys_lines, sys_title, right_w, len(sys_lines) + 2 + body_h - right_h),
        ]
        body: list[RenderableType] = [SideBySide(Group(*left_panels), Group(*right_panels), left_w, right_w)]
    else:
        sys_title, sys_lines = system_panel(view.telemetry, width)
        parts = [
            (losses_panel(view, width), "losses"),
            (gradients_panel(view, width), "gradients"),
            (throughput_panel(view, width), f"throughput · {view.split_source}"),
            (sys_lines, sys_title),
        ]
        body = [panel(lines, title, width) for lines, title in parts]
        body_h = sum(len(lines) + 2 for lines, _ in parts)
    room = height - 1 - len(top) - body_h - 2
    ev_title, ev_lines = events_panel(view, max(1, room))
    return Group(*top, *body, panel(ev_lines, ev_title, width))


def summary(view: View) -> RenderableType:
    """The end-of-run report printed once the live display has stopped."""
    s = view.summary or {}
    info = view.info
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    steps, elapsed = s.get("steps", view.step), s.get("elapsed_s", view.elapsed_s)
    if s.get("interrupted"):
        result = Text(f"interrupted at step {steps} after {duration(elapsed)}", style="yellow")
    elif s.get("exit_code"):
        result = Text(f"stopped at step {steps} after {duration(elapsed)} (exit {s['exit_code']})", style="bold red")
    else:
        result = Text(f"finished {steps} steps in {duration(elapsed)}", style="green")
    table.add_row("result", result)
    losses = view.losses.get("loss", ())
    known = finite_floats(losses)
    if known:
        table.add_row(
            "loss", f"{num(known[0])} → {num(known[-1])} (last {min(len(known), 20)} mean {num(recent_mean(losses))})"
        )
    ev = s.get("last_eval") or view.last_eval
    if ev:
        table.add_row(
            "eval",
            f"AP {num(_get(ev, 'AP'))} · AP50 {num(_get(ev, 'AP50'))} · AP75 {num(_get(ev, 'AP75'))}"
            f" (step {ev.get('step', '?')})",
        )
    ips, share = images_per_s(view), data_wait_share(view)
    if ips is not None:
        table.add_row(
            "throughput",
            Text.assemble(f"{ips:.1f} img/s · data wait ", (percent(share), LEVEL_STYLE[wait_level(share)])),
        )
    grads = f"{view.skipped_steps} steps skipped"
    fraction = clipped_fraction(view)
    if fraction is not None:
        grads += f" · {percent(fraction)} of recent steps clipped"
    table.add_row("gradients", grads)
    watchdog = s.get("watchdog")
    if isinstance(watchdog, dict) and watchdog:
        table.add_row("watchdog", _flat(watchdog))
    if view.kind_counts:
        table.add_row("events", ", ".join(f"{k} ×{n}" for k, n in sorted(view.kind_counts.items())))
    files = [e for e in view.events if e.fields.get("path") and e.kind in FILE_KINDS]
    for event in files:
        table.add_row(event.kind, "\n".join(map(str, event.fields.get("paths") or [event.fields["path"]])))
    serious = [e for e in view.events if e.severity in ("warning", "error") and e.kind not in FILE_KINDS]
    for event in serious[-SUMMARY_WARNINGS:]:
        table.add_row(Text(event.kind, style=SEVERITY_STYLE[event.severity]), f"step {event.step}: {event.message}")
    if s.get("corrupt_samples"):
        table.add_row("data", f"{s['corrupt_samples']} corrupt images replaced")
    if info is not None:
        table.add_row("run folder", info.output_dir)
    if s.get("checkpoint"):
        resume = " (continue with --resume)" if s.get("interrupted") or s.get("exit_code") else ""
        table.add_row("checkpoint", f"{s['checkpoint']}{resume}")
    return Panel(table, title="run summary", title_align="left", border_style="bright_black", expand=False)


def _flat(mapping: dict[str, Any], nested_limit: int = 4) -> str:
    """A summary of unknown shape (the watchdog's) as `key value` pairs: empty values and long nested
    mappings left out, short ones inline."""

    def value_text(value: Any) -> str:
        return num(value) if isinstance(value, float) else str(value)

    parts = []
    for key, value in mapping.items():
        if isinstance(value, dict):
            shown = {k: v for k, v in value.items() if v is not None}
            if not shown or len(shown) > nested_limit:
                continue
            value = ", ".join(f"{k} {value_text(v)}" for k, v in shown.items())
        elif value is None or isinstance(value, (list, tuple)):
            continue
        parts.append(f"{key.replace('_', ' ')} {value_text(value)}")
    return " · ".join(parts)
