"""`metrics.jsonl`: one JSON object per line, each with a "type" (step, eval, event).

The records' fields are a contract (the readers: plot, triage, the dashboard, user scripts). Every float
can be null in the file: a non-finite value is written as null.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeGuard


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

    Thread-safe: the stall detector writes its event from its own thread while the loop is blocked.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._file = open(self.path, "a", encoding="utf-8") if self.path else None
        self._lock = threading.Lock()

    def write(self, record: MetricsRecord) -> None:
        if self._file is None:
            return
        line = json.dumps(finite_or_none(record), allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                return
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_metrics(path: str | Path) -> list[MetricsRecord]:
    """All records of a metrics.jsonl file (as written: not checked against the record types)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
