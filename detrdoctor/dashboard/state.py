"""What the dashboard shows: numbers collected from the trainer's hooks, frozen into views, and judged.

The training thread only appends to bounded deques under a lock held for microseconds; the refresh
thread takes a `View` (an immutable copy) and renders from it, so drawing never waits on a step.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from detr.criterion import LOSS_TERMS
from detr.engine.metrics import EvalRecord, EventRecord, StepRecord
from detrdoctor.dashboard.telemetry import Telemetry
from detrdoctor.fmt import finite_floats
from detrdoctor.watchdog.signals import is_watchdog_warning

HISTORY = 256  # points kept per series: more than the widest sparkline shows
WINDOW = 50  # recent steps behind rates, time shares and the ETA
SMOOTH = 20  # logged records averaged into the smoothed losses
EVENTS_KEPT = 50
LOSS_KEYS = ("loss", *LOSS_TERMS)  # the weighted total and the criterion's terms
SPLIT_KEYS = ("data", "forward", "backward", "optimizer", "other")
WAIT_WARN, WAIT_BAD = 0.10, 0.30  # data-wait share of step time: above these the accelerator starves


@dataclass(frozen=True)
class RunInfo:
    """Fixed for the whole run."""

    run_name: str
    profile: str
    device: str  # e.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"
    world_size: int
    amp: str
    total_steps: int
    steps_per_epoch: int
    epochs: int
    clip_max_norm: float
    output_dir: str


@dataclass(frozen=True)
class Event:
    step: int
    kind: str
    severity: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)  # the rest of the event record (path, module, ...)


@dataclass(frozen=True)
class View:
    """A consistent, immutable snapshot of the dashboard state."""

    version: int = 0
    info: RunInfo | None = None
    phase: str = "starting"  # starting | training | evaluating | done | stopped
    step: int = 0
    epoch: int = 0
    elapsed_s: float = 0.0
    losses: dict[str, tuple[float | None, ...]] = field(default_factory=dict)  # logged records, oldest first
    lr: float | None = None
    grad_norms: tuple[float | None, ...] = ()
    clip_ratio: float | None = None  # from the record when the watchdog provides it
    loss_scale: float | None = None
    skipped_steps: int = 0
    step_times: tuple[float, ...] = ()  # every step, oldest first
    images: tuple[int, ...] = ()  # images per step (all ranks), aligned with step_times
    split: dict[str, float] = field(default_factory=dict)  # mean seconds per part over the recent window
    split_source: str = "host timers"
    last_eval: dict[str, Any] | None = None
    events: tuple[Event, ...] = ()
    severity_counts: dict[str, int] = field(default_factory=dict)
    kind_counts: dict[str, int] = field(default_factory=dict)
    telemetry: Telemetry | None = None
    summary: dict[str, Any] | None = None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


class DashboardState:
    """Mutable dashboard state; every method is safe to call from any thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        self._version = 0  # bumped by every change: unchanged views need no redraw
        self._started: float | None = None
        self._ended: float | None = None
        self._info: RunInfo | None = None
        self._phase = "starting"
        self._step = self._epoch = self._skipped = 0
        self._losses: dict[str, deque[float | None]] = {k: deque(maxlen=HISTORY) for k in LOSS_KEYS}
        self._grad_norms: deque[float | None] = deque(maxlen=HISTORY)
        self._latest: dict[str, Any] = {}
        self._step_times: deque[float] = deque(maxlen=HISTORY)
        self._images: deque[int] = deque(maxlen=HISTORY)
        self._host_split: deque[tuple[float, ...]] = deque(maxlen=WINDOW)  # data, forward, backward, optimizer, step
        self._gpu_split: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)  # forward, backward, optimizer
        self._last_eval: dict[str, Any] | None = None
        self._events: deque[Event] = deque(maxlen=EVENTS_KEPT)
        self._severities: Counter[str] = Counter()
        self._kinds: Counter[str] = Counter()
        self._telemetry: Telemetry | None = None
        self._summary: dict[str, Any] | None = None

    def start(self, info: RunInfo, step: int = 0) -> None:
        with self._lock:
            self._version += 1
            self._info, self._step, self._started, self._phase = info, step, self._clock(), "training"

    def add_step(self, step: int, epoch: int, timings: dict[str, float], images: int, stepped: bool) -> None:
        """Every step: host timings only, nothing that would read the device."""
        parts = tuple(float(timings.get(k, 0.0)) for k in ("data", "forward", "backward", "optimizer", "step"))
        with self._lock:
            self._version += 1
            self._step, self._epoch = step, epoch
            self._skipped += not stepped
            self._host_split.append(parts)
            self._step_times.append(parts[-1])
            self._images.append(images)

    def add_gpu_split(self, forward: float, backward: float, optimizer: float) -> None:
        """Device-side seconds of one step's phases, measured with CUDA events (arrives a step or two late)."""
        with self._lock:
            self._version += 1
            self._gpu_split.append((forward, backward, optimizer))

    def add_record(self, record: StepRecord) -> None:
        """A logged step record (metrics.jsonl): losses, grad norm, learning rate."""
        with self._lock:
            self._version += 1
            for key, series in self._losses.items():
                series.append(_finite(record.get(key)))
            self._grad_norms.append(_finite(record.get("grad_norm")))
            self._latest = {k: record.get(k) for k in ("lr", "clip_ratio", "loss_scale")}

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self._version += 1
            self._phase = phase

    def add_eval(self, record: EvalRecord) -> None:
        with self._lock:
            self._version += 1
            self._last_eval, self._phase = dict(record), "training"

    def add_event(self, event: EventRecord) -> None:
        core = ("type", "step", "kind", "severity", "message")
        item = Event(
            step=int(event.get("step") or 0),
            kind=str(event.get("kind", "event")),
            severity=str(event.get("severity", "info")),
            message=str(event.get("message", "")),
            fields={k: v for k, v in event.items() if k not in core},
        )
        with self._lock:
            self._version += 1
            self._events.append(item)
            self._severities[item.severity] += 1
            self._kinds[item.kind] += 1

    def set_telemetry(self, telemetry: Telemetry) -> None:
        with self._lock:
            self._version += 1
            self._telemetry = telemetry

    def finish(self, summary: dict[str, Any]) -> None:
        with self._lock:
            self._version += 1
            phase = "stopped" if summary.get("exit_code") else "done"  # a run that died is not "done"
            self._summary, self._phase, self._ended = dict(summary), phase, self._clock()

    def snapshot(self) -> View:
        with self._lock:
            now = self._ended if self._ended is not None else self._clock()
            host, gpu = list(self._host_split), list(self._gpu_split)
            return View(
                version=self._version,
                info=self._info,
                phase=self._phase,
                step=self._step,
                epoch=self._epoch,
                elapsed_s=now - self._started if self._started is not None else 0.0,
                losses={k: tuple(v) for k, v in self._losses.items()},
                lr=_finite(self._latest.get("lr")),
                grad_norms=tuple(self._grad_norms),
                clip_ratio=_finite(self._latest.get("clip_ratio")),
                loss_scale=_finite(self._latest.get("loss_scale")),
                skipped_steps=self._skipped,
                step_times=tuple(self._step_times),
                images=tuple(self._images),
                split=split_means(host, gpu),
                split_source="CUDA events" if gpu else "host timers",
                last_eval=self._last_eval,
                events=tuple(self._events),
                severity_counts=dict(self._severities),
                kind_counts=dict(self._kinds),
                telemetry=self._telemetry,
                summary=self._summary,
            )


def split_means(host: list[tuple[float, ...]], gpu: list[tuple[float, float, float]]) -> dict[str, float]:
    """Mean seconds per step for data wait, forward, backward, optimizer and the rest.

    With CUDA events the device-side phase times replace the host timers, which on a GPU only
    measure kernel launches; data wait and the step's wall time always come from the host.
    """
    if not host:
        return {}
    n = len(host)
    data, forward, backward, optimizer, step = (sum(col) / n for col in zip(*host))
    if gpu:
        forward, backward, optimizer = (sum(col) / len(gpu) for col in zip(*gpu))
    other = max(0.0, step - data - forward - backward - optimizer)
    return {
        "data": data,
        "forward": forward,
        "backward": backward,
        "optimizer": optimizer,
        "other": other,
        "step": step,
    }


# ----------------------------------------------------------------------------- judgements


def recent_mean(values: Iterable[float | None], window: int = SMOOTH) -> float | None:
    """Mean of the last `window` finite values."""
    recent = finite_floats(list(values)[-window:])
    return sum(recent) / len(recent) if recent else None


def images_per_s(view: View) -> float | None:
    times, images = view.step_times[-WINDOW:], view.images[-WINDOW:]
    return sum(images) / sum(times) if times and sum(times) > 0 else None


def data_wait_share(view: View) -> float | None:
    """Fraction of recent step time spent waiting for the next batch."""
    split = view.split
    return split["data"] / split["step"] if split and split["step"] > 0 else None


def wait_level(share: float | None) -> str:
    """ok | warn | bad: how much the data pipeline starves the model."""
    if share is None or share < WAIT_WARN:
        return "ok"
    return "warn" if share < WAIT_BAD else "bad"


def eta_s(view: View) -> float | None:
    """Seconds left at the median recent step time (evaluation time not included)."""
    if view.info is None or not view.step_times or view.phase in ("done", "stopped"):
        return None
    remaining = max(0, view.info.total_steps - view.step)
    return remaining * statistics.median(view.step_times[-WINDOW:])


def clip_ratio(view: View) -> float | None:
    """Clipped norm / raw norm of the latest logged step (1.0: not clipped); None when clipping is off."""
    if view.clip_ratio is not None:
        return view.clip_ratio
    norms = finite_floats(view.grad_norms[-1:])
    if not norms or view.info is None or view.info.clip_max_norm <= 0:
        return None
    return min(1.0, view.info.clip_max_norm / norms[0]) if norms[0] > 0 else 1.0


def clipped_fraction(view: View) -> float | None:
    """Share of recent logged steps whose gradient norm exceeded the clip threshold."""
    norms = finite_floats(view.grad_norms[-WINDOW:])
    if not norms or view.info is None or view.info.clip_max_norm <= 0:
        return None
    return sum(n > view.info.clip_max_norm for n in norms) / len(norms)


def is_gradient_warning(event: Event) -> bool:
    return is_watchdog_warning(event.severity, event.kind, event.fields.get("signal"))


def latest_gradient_warning(view: View) -> Event | None:
    return next((e for e in reversed(view.events) if is_gradient_warning(e)), None)
