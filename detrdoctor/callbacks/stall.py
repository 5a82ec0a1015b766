"""Stall detection: when no training step completes in time, dump every stack (trainer and DataLoader
workers) with py-spy into the run folder and raise a `stall` event naming where each process waits.

A watchdog thread does the waiting, since a stalled main thread cannot notice its own stall. It writes
its event directly (the metrics writer is locked) because the main thread is blocked in the meantime.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from detr.config import ON_STALL
from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.metrics import EvalRecord, StepRecord
from detr.errors import DetrError
from detrdoctor import pyspy

STOP_GRACE_S = 30.0  # after asking the loop to stop: then the process exits without unwinding
STALL_EXIT_CODE = 1  # a stalled run failed: what `fit()` reports, or the process exits with after the grace


class StallDetector(Callback):
    """Watches step completions; a step that takes longer than `limit_s()` counts as a stall.

    The limit is max(`min_limit_s`, `factor` × the median recent step time); until the first step of
    the run completes (worker start-up, compilation, cuDNN autotuning) it is max(`min_limit_s`,
    `first_step_limit_s`). Evaluation pauses the clock. A stall is dumped up to `max_dumps` times,
    one limit apart; with on_stall="stop" the run then stops (exit 1), with the checkpoint of its last finished step.
    """

    def __init__(
        self,
        min_limit_s: float = 60.0,
        factor: float = 10.0,
        first_step_limit_s: float = 300.0,
        on_stall: str = "wait",
        max_dumps: int = 3,
        native: bool = True,
    ):
        if on_stall not in ON_STALL:
            raise ValueError(f"on_stall must be one of {ON_STALL}, got {on_stall!r}")
        self.min_limit_s, self.factor, self.first_step_limit_s = min_limit_s, factor, first_step_limit_s
        self.on_stall, self.max_dumps, self.native = on_stall, max_dumps, native
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a step, an evaluation or the end: re-plan the wait
        self._step_times: deque[float] = deque(maxlen=100)
        self._last_progress = 0.0
        self._step = 0  # last completed step
        self._dumps = 0  # dumps of the current stall
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None

    def limit_s(self) -> float:
        with self._lock:
            return self._limit()

    def _limit(self) -> float:
        if not self._step_times:
            return max(self.min_limit_s, self.first_step_limit_s)
        return max(self.min_limit_s, self.factor * statistics.median(self._step_times))

    def on_train_start(self, trainer: TrainerView) -> None:
        self._trainer, self._pid = trainer, os.getpid()
        self._rank_suffix = f"-rank{trainer.rank}" if trainer.world_size > 1 else ""
        self._step, self._last_progress = trainer.global_step, time.monotonic()
        pyspy.allow_descendants_to_trace()
        self._stopping = False
        self._thread = threading.Thread(target=self._watch, name="detrdoctor-stall", daemon=True)
        self._thread.start()

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        with self._changed:
            self._step_times.append(ctx.timings.get("step", 0.0))
            self._step, self._last_progress, self._dumps = ctx.step, time.monotonic(), 0
            self._changed.notify()

    def on_eval_start(self, trainer: TrainerView) -> None:
        with self._changed:
            self._paused = True
            self._changed.notify()

    def on_eval(self, trainer: TrainerView, record: EvalRecord) -> None:
        with self._changed:
            self._paused, self._last_progress, self._dumps = False, time.monotonic(), 0
            self._changed.notify()

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        while True:
            with self._changed:
                if self._stopping:
                    return
                limit, waited = self._limit(), time.monotonic() - self._last_progress
                due = limit * (self._dumps + 1)  # a stall already dumped n times is dumped again one limit later
                if self._paused or self._dumps >= self.max_dumps or waited < due:
                    self._changed.wait(None if self._paused or self._dumps >= self.max_dumps else due - waited)
                    continue
                self._dumps += 1
                step, number = self._step + 1, self._dumps
            self._report(step, number, waited, limit)

    def _report(self, step: int, number: int, waited: float, limit: float) -> None:
        """Dump, write, and emit the `stall` event (from this thread: the main one is blocked)."""
        trainer, pid = self._trainer, self._pid
        message = f"no step for {waited:.0f} s (step {step}, limit {limit:.0f} s)"
        fields: dict[str, Any] = {"waited_s": round(waited, 1), "limit_s": round(limit, 1), "path": None}
        try:
            text = pyspy.dump(pid, subprocesses=True, native=self.native)
        except DetrError as e:
            unavailable = isinstance(e, pyspy.PySpyUnavailable)
            note = pyspy.explain_once("pyspy", str(e)) if unavailable else str(e)
            message += f"; no stack dump ({note})" if note else "; no stack dump (py-spy cannot attach)"
        else:
            path = Path(trainer.output_dir) / f"stall-{step}-{number}{self._rank_suffix}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                f"# detrdoctor stall dump: {message}; pid {pid}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n\n{text}"
            )
            points = pyspy.wait_points(pyspy.parse_dump(text), pid)
            message += f": {pyspy.describe_wait(points, pid) or 'no Python frames'}; stacks in {path}"
            fields.update(path=str(path), frames=points)
        trainer.emit_event("stall", message, severity="warning", **fields)
        if self.on_stall == "stop":
            self._stop_main(trainer, message)

    def _stop_main(self, trainer: TrainerView, message: str) -> None:
        """End the run. A loop waiting for data stops at once with the checkpoint of the last finished step (its
        wait can always be given up, see detr/engine/batches.py); a step that finishes after all stops at its end.
        A step blocked in native code (a kernel, a collective with a dead peer) can be reached by nothing:
        no exception is delivered to a thread inside C, so after the grace period exiting the process is the
        only way to end the run; the event above and the last checkpoint written are on disk by then."""
        trainer.request_stop(f"stalled: {message}", STALL_EXIT_CODE)
        with self._changed:
            if not self._changed.wait_for(lambda: self._stopping, STOP_GRACE_S):
                os._exit(STALL_EXIT_CODE)
