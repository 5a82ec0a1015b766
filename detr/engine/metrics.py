"""`metrics.jsonl`: one JSON object per line, each with a "type" (step, eval, event).

The records' fields are a contract (the readers: plot, triage, the dashboard, user scripts). Every float
can be null in the file: a non-finite value is written as null.
"""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeGuard, cast

from detr.engine.best import BestRecord
from detr.outputs import writing


class _StepFields(TypedDict):
    type: Literal["step"]
    step: int
    epoch: int
    loss: float | None  # the weighted total
    lr: float  # of the first parameter group
    grad_norm: float | None  # before clipping
    clip_ratio: float
    step_time_s: float
    data_time_s: float
    images_per_s: float | None  # None for a zero step time


class LoggedTerms(TypedDict, total=False):
    """The criterion's logged terms (`SetCriterion.logged_terms`), those it computed, of the last decoder layer."""

    loss_ce: float | None
    loss_bbox: float | None
    loss_giou: float | None
    class_error: float | None
    cardinality_error: float | None


class StepRecord(_StepFields, LoggedTerms, total=False):
    """A logged step."""

    loss_scale: float  # fp16 only: the GradScaler's scale for the next step
    skipped: bool  # only on a step whose update was vetoed


class BoxStats(TypedDict):
    """COCO's headline box metrics (detr.engine.evaluate.STAT_NAMES), None where undefined."""

    AP: float | None
    AP50: float | None
    AP75: float | None
    APs: float | None
    APm: float | None
    APl: float | None


class EvalRecord(BoxStats):
    """A COCO evaluation during training."""

    type: Literal["eval"]
    step: int
    ema: bool  # scored with the weight average
    eval_time_s: float
    batch_size: int  # the batch that scored (an out-of-memory retry halves it)
    best: BestRecord | None  # best.pth's metric, value and step after this evaluation
    new_best: bool  # this evaluation wrote best.pth


class EventRecord(TypedDict):
    """The fields every event has; each kind's own fields (path, frames, ...) ride along beside them."""

    type: Literal["event"]
    step: int
    kind: str
    severity: str  # info | warning | error
    message: str
    signal: str | None
    value: float | None
    threshold: float | None
    module: str | None


MetricsRecord = StepRecord | EvalRecord | EventRecord


def is_step(record: MetricsRecord) -> TypeGuard[StepRecord]:
    return record.get("type") == "step"


def is_eval(record: MetricsRecord) -> TypeGuard[EvalRecord]:
    return record.get("type") == "eval"


def is_event(record: MetricsRecord) -> TypeGuard[EventRecord]:
    return record.get("type") == "event"


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: write non-finite numbers as null so every line stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


class MetricsWriter:
    """Appends records to a JSONL file, flushed line by line so a crash loses at most one record.

    A torn last line (a kill or a full disk mid-write) is cut off on opening, so appended records start on a
    line of their own; `repaired_bytes` says how much was cut. `truncate` starts the file afresh.
    Thread-safe: the stall detector writes its event from its own thread while the loop is blocked.
    """

    def __init__(self, path: str | Path | None, truncate: bool = False):
        self.path = Path(path) if path else None
        self.repaired_bytes = 0
        self._file = None
        if self.path is not None:
            with writing(self.path):
                if not truncate:
                    self.repaired_bytes = cut_torn_line(self.path)
                self._file = open(self.path, "w" if truncate else "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: MetricsRecord) -> None:
        if self._file is None:
            return
        line = json.dumps(finite_or_none(record), allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                return
            with writing(self.path or "metrics.jsonl"):
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass  # its failed write was already reported
                self._file = None


def cut_torn_line(path: Path) -> int:
    """Cut an unterminated last line off `path`; returns the bytes removed (0: none, or no file)."""
    if not path.is_file():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep = 0
        position = size
        while position > 0:  # the last newline, read backwards in blocks
            start = max(0, position - 65536)
            f.seek(start)
            block = f.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        f.truncate(keep)
        return size - keep


def read_metrics_checked(path: str | Path) -> tuple[list[MetricsRecord], str | None]:
    """All records of a metrics.jsonl file, and a note naming the lines that are not JSON, which are skipped:
    a killed run or a full disk leaves a torn last line (and an older version appended after one)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    records: list[MetricsRecord] = []
    torn: list[int] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn.append(number)
            continue
        if isinstance(record, dict):
            records.append(cast(MetricsRecord, record))  # as written: not checked against the types
    if not torn:
        return records, None
    shown = ", ".join(map(str, torn[:5]))
    which = "its torn last line" if torn == [len(lines)] else f"{len(torn)} torn lines (line {shown})"
    return records, f"{path}: skipped {which}, cut short by a killed run or a full disk"


def read_metrics(path: str | Path) -> list[MetricsRecord]:
    """All records of a metrics.jsonl file (a torn last line skipped, see `read_metrics_checked`)."""
    return read_metrics_checked(path)[0]
