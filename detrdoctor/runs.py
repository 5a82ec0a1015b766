"""A finished (or running) run folder read back from its metrics.jsonl: one series per plotted quantity, the events."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detr.engine.best import BestRecord
from detr.engine.metrics import EventRecord, MetricsRecord, is_eval, is_event, read_metrics_checked
from detr.errors import DataError
from detrdoctor.watchdog.signals import is_watchdog_warning


@dataclass(frozen=True)
class Series:
    key: str
    label: str
    better: str | None  # "min" or "max": which end is best; None where neither is (learning rate, gradient norm)
    record: str = "step"  # the metrics.jsonl record type it comes from
    log: bool = False


SERIES = (
    Series("loss", "total loss", "min"),
    Series("loss_ce", "class loss (ce)", "min"),
    Series("loss_bbox", "box L1 loss", "min"),
    Series("loss_giou", "GIoU loss", "min"),
    Series("AP", "eval AP", "max", record="eval"),
    Series("AP50", "eval AP50", "max", record="eval"),
    Series("grad_norm", "gradient norm", None, log=True),
    Series("lr", "learning rate", None, log=True),
    Series("images_per_s", "images/s", "max"),
    Series("data_wait", "data-wait share", "min"),
)


@dataclass
class Run:
    name: str
    folder: Path
    points: dict[str, list[tuple[int, float]]]  # series key → (step, value), by step
    events: list[EventRecord] = field(default_factory=list)
    note: str | None = None  # lines of metrics.jsonl that were skipped (a torn last line), for the reader to say
    best: BestRecord | None = None  # the last eval record's `best` ({"metric", "value", "step"}): best.pth's

    @property
    def last_step(self) -> int:
        return max((steps[-1][0] for steps in self.points.values() if steps), default=0)


def record_value(record: MetricsRecord, key: str) -> float | None:
    """A series value of a record; the data-wait share is data_time_s / step_time_s."""
    if key == "data_wait":
        data, step = record_value(record, "data_time_s"), record_value(record, "step_time_s")
        return data / step if data is not None and step else None
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_run(folder: str | Path, name: str) -> Run:
    """The series of a run folder (or a metrics.jsonl path). A resumed run logged some steps twice: the later wins."""
    path = Path(folder)
    metrics = path / "metrics.jsonl" if path.is_dir() else path
    if not metrics.is_file():
        raise DataError(f"{folder}: no metrics.jsonl (give a run folder written by `detrdoctor train`)")
    records, note = read_metrics_checked(metrics)
    by_step: dict[str, dict[int, float]] = {s.key: {} for s in SERIES}
    for record in records:
        for series in SERIES:
            if record.get("type") == series.record:
                value = record_value(record, series.key)
                if value is not None:
                    by_step[series.key][int(record["step"])] = value
    events = [r for r in records if is_event(r)]
    best = next((r["best"] for r in reversed(records) if is_eval(r) and r.get("best")), None)
    return Run(
        name, metrics.parent, {key: sorted(values.items()) for key, values in by_step.items()}, events, note, best
    )


def load_runs(folders: list[str]) -> list[Run]:
    """Runs named after their folders (the path as given where two folders share a name)."""
    names = [Path(f).resolve().name if Path(f).is_dir() else Path(f).resolve().parent.name for f in folders]
    return [load_run(folder, name if names.count(name) == 1 else folder) for folder, name in zip(folders, names)]


def smoothed(values: list[float], window: int) -> list[float]:
    """Trailing mean over `window` values (the first ones over what there is)."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def is_watchdog_event(event: EventRecord) -> bool:
    """An event the gradient panel marks: what the watchdog reports (warnings and errors)."""
    return is_watchdog_warning(event.get("severity"), event.get("kind"), event.get("signal"))


def run_summary(run: Run) -> dict[str, Any]:
    """Per series: points, last value and best value (with their steps); and the events."""
    series = {}
    for s in SERIES:
        points = run.points[s.key]
        if not points:
            continue
        entry: dict[str, Any] = {"points": len(points), "last": points[-1][1], "last_step": points[-1][0]}
        if s.better:
            step, value = (min if s.better == "min" else max)(points, key=lambda p: p[1])
            entry.update(best=value, best_step=step)
        series[s.key] = entry
    events = [{key: e.get(key) for key in ("step", "kind", "severity", "message")} for e in run.events]
    return {
        "name": run.name,
        "folder": str(run.folder),
        "steps": run.last_step,
        "series": series,
        "events": events,
        "best": run.best,
    }
