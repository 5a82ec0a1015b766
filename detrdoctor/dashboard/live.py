"""The `Dashboard` callback: feeds `DashboardState` from the trainer's hooks and draws it with rich `Live`.

Live's own thread redraws a few times a second from a snapshot (and reads telemetry about once a
second); the hooks only append numbers, so a slow terminal or a slow NVML call never delays a step.
"""

from __future__ import annotations

import atexit
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.segment import SegmentLines

from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.loaders import batch_sampler
from detr.engine.metrics import EvalRecord, EventRecord, StepRecord
from detrdoctor.dashboard import render
from detrdoctor.dashboard.state import DashboardState, RunInfo
from detrdoctor.dashboard.telemetry import TelemetrySampler


class CudaStepTimer:
    """Device-side seconds of forward+loss, backward and optimizer per step, from CUDA events.

    Host timers around asynchronous kernels measure launches, not work. Four events per step
    (step start, after the loss, after backward, step end) are recorded on the current stream and
    read only once the GPU has passed the last one (`query()`), so timing never synchronises.
    """

    MAX_PENDING = 16  # steps whose events the GPU has not reached yet; older ones are dropped

    def __init__(self, new_event: Callable[[], Any], on_result: Callable[[float, float, float], None]):
        self._new_event = new_event
        self._on_result = on_result
        self._current: list[Any] | None = None
        self._pending: deque[list[Any]] = deque(maxlen=self.MAX_PENDING)

    def mark(self) -> None:
        if self._current is not None:
            event = self._new_event()
            event.record()
            self._current.append(event)

    def begin(self) -> None:
        self.collect()
        self._current = []
        self.mark()

    def end(self) -> None:
        self.mark()
        if self._current is not None and len(self._current) == 4:  # a re-run step marks more often: not comparable
            self._pending.append(self._current)
        self._current = None

    def collect(self) -> None:
        while self._pending and self._pending[0][-1].query():
            events = self._pending.popleft()
            self._on_result(*(a.elapsed_time(b) / 1000 for a, b in zip(events, events[1:])))


def run_info(trainer: TrainerView, profile: str) -> RunInfo:
    t = trainer.cfg.train
    return RunInfo(
        run_name=Path(trainer.output_dir).name,
        profile=profile,
        device=str(trainer.device),
        world_size=trainer.world_size,
        amp=t.amp,
        total_steps=trainer.total_steps(),
        steps_per_epoch=batch_sampler(trainer.train_loader).batches_per_epoch,
        epochs=t.epochs,
        clip_max_norm=t.clip_max_norm,
        output_dir=str(trainer.output_dir),
    )


class Dashboard(Callback):
    """The live training screen on the main process; prints the final frame and a summary at the end."""

    def __init__(
        self,
        console: Console | None = None,
        profile: str = "",
        refresh_per_second: float = 2.0,
        telemetry_every_s: float = 1.0,
    ):
        self.console = console or Console()
        self.profile = profile
        self.refresh_per_second = refresh_per_second
        self.telemetry_every_s = telemetry_every_s
        self.state = DashboardState()
        self._live: Live | None = None
        self._sampler: TelemetrySampler | None = None
        self._sampled_at = -float("inf")
        self._timer: CudaStepTimer | None = None
        self._hook: Any = None
        self._frame_key: tuple | None = None
        self._frame_lines: SegmentLines | None = None

    def on_train_start(self, trainer: TrainerView) -> None:
        if not trainer.is_main:
            return
        self.state.start(run_info(trainer, self.profile), trainer.global_step)
        self._sampler = TelemetrySampler(trainer.device, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if trainer.device.type == "cuda":
            import torch

            self._timer = CudaStepTimer(lambda: torch.cuda.Event(enable_timing=True), self.state.add_gpu_split)
            self._hook = trainer.criterion.register_forward_hook(lambda *_: self._timer.mark())
        # transient: an error raised out of the loop is then printed on a clean screen, not above a frozen frame
        self._live = Live(
            console=self.console,
            get_renderable=self._frame,
            refresh_per_second=self.refresh_per_second,
            transient=True,
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self._live.start(refresh=True)
        atexit.register(self.close)

    def _frame(self) -> RenderableType:
        """Called by Live's refresh thread: redraws only when the state, the second or the size changed."""
        now = time.monotonic()
        if self._sampler is not None and now - self._sampled_at >= self.telemetry_every_s:
            self._sampled_at = now
            self.state.set_telemetry(self._sampler.read())
        view = self.state.snapshot()
        width, height = self.console.size
        key = (view.version, int(view.elapsed_s), width, height)
        if key != self._frame_key:
            options = self.console.options.update(width=width, height=None)
            self._frame_lines = SegmentLines(
                self.console.render_lines(render.dashboard(view, width, height), options, pad=False), new_lines=True
            )
            self._frame_key = key
        assert self._frame_lines is not None  # drawn at the first call: no key matches None
        return self._frame_lines

    def on_step_start(self, trainer: TrainerView, ctx: StepContext) -> None:
        if self._timer is not None:
            self._timer.begin()

    def after_backward(self, trainer: TrainerView, ctx: StepContext) -> None:
        if self._timer is not None:
            self._timer.mark()

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        if self._live is None:
            return
        if self._timer is not None:
            self._timer.end()
        self.state.add_step(
            ctx.step, ctx.epoch, ctx.timings, len(ctx.targets) * trainer.world_size, ctx.optimizer_stepped
        )
        if record is not None:
            self.state.add_record(record)

    def on_eval_start(self, trainer: TrainerView) -> None:
        self.state.set_phase("evaluating")

    def on_eval(self, trainer: TrainerView, record: EvalRecord) -> None:
        self.state.add_eval(record)

    def on_event(self, trainer: TrainerView, event: EventRecord) -> None:
        self.state.add_event(event)

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        if self._live is None:
            return
        self.state.finish(summary)
        self.close()
        view = self.state.snapshot()
        width, height = self.console.size
        self.console.print(render.dashboard(view, width, height))
        self.console.print(render.summary(view))

    def close(self) -> None:
        """Stop drawing and restore the terminal; safe to call twice (also runs at exit after a crash)."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()
            atexit.unregister(self.close)
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
