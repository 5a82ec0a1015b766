"""`detrdoctor train --profile-cpu STEPS`: a py-spy flame graph (SVG + speedscope) of a window of steps,
DataLoader workers included, written into the run folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.metrics import StepRecord
from detr.errors import DetrError
from detrdoctor import pyspy


class CpuProfiler(Callback):
    """Records steps `warmup + 1` … `warmup + steps` of this run.

    The warm-up keeps worker start-up and first-step allocations out of the picture. Recorders are
    started and signalled from the hooks but never waited for inside a step: the files are announced
    with a `profile_cpu` event once py-spy has written them (at the latest when training ends).
    """

    def __init__(self, steps: int, warmup: int = 3):
        if steps < 1:
            raise DetrError(f"--profile-cpu must be at least 1 step, got {steps}")
        self.steps, self.warmup = steps, warmup
        self._window: tuple[int, int] | None = None  # None: nothing (more) to record
        self._recorder: pyspy.FlameRecorder | None = None
        self._stopping = False

    def on_train_start(self, trainer: TrainerView) -> None:
        if not trainer.is_main:
            return
        first = trainer.global_step + self.warmup + 1
        self._window = (first, first + self.steps - 1)
        pyspy.allow_descendants_to_trace()

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        if self._window is None:
            return
        first, last = self._window
        if self._recorder is None:
            if ctx.step == first - 1:
                self._start(trainer)
        elif self._stopping:
            if self._recorder.done():
                self._finish(trainer)
        elif (failure := self._recorder.failure()) is not None:
            self._finish(trainer, failure)
        elif ctx.step >= last:
            self._recorder.stop()
            self._stopping = True

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        if self._recorder is not None:
            self._recorder.stop()
            self._finish(trainer)
        elif self._window is not None:
            trainer.emit_event(
                "profile_cpu", f"no flame graph: the run ended before step {self._window[0]}", severity="warning"
            )

    def _start(self, trainer: TrainerView) -> None:
        assert self._window is not None  # started only inside the window
        first, last = self._window
        recorder = pyspy.FlameRecorder(os.getpid(), Path(trainer.output_dir) / f"flamegraph-steps-{first}-{last}")
        try:
            recorder.start()
        except DetrError as e:
            self._window = None
            self._warn(trainer, e)
            return
        self._recorder = recorder
        trainer.emit_event("profile_cpu", f"recording a py-spy flame graph of steps {first}–{last}, workers included")

    def _finish(self, trainer: TrainerView, failure: DetrError | None = None) -> None:
        """Wait for py-spy to write (it already stopped sampling), then announce the files; runs once."""
        recorder, self._recorder, self._window = self._recorder, None, None
        assert recorder is not None  # finished only while recording
        if failure is not None:
            recorder.stop()
        paths, error = recorder.wait()
        if paths and failure is None:
            trainer.emit_event(
                "profile_cpu",
                "flame graph: " + ", ".join(str(p) for p in paths),
                path=str(paths[0]),
                paths=[str(p) for p in paths],
            )
        else:
            self._warn(trainer, failure or error or DetrError("py-spy wrote no flame graph"))

    @staticmethod
    def _warn(trainer: TrainerView, error: DetrError) -> None:
        note = str(error)
        if isinstance(error, pyspy.PySpyUnavailable):
            note = pyspy.explain_once("pyspy", note) or "py-spy cannot attach"
        trainer.emit_event("profile_cpu", f"no flame graph: {note}", severity="warning")
