"""Plain-text progress for `train`: one line per logged step, eval and event (for logs and non-terminals)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from detr.criterion import LOSS_TERMS
from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.metrics import EvalRecord, EventRecord, StepRecord
from detrdoctor.fmt import number

SEVERITY_STYLE = {"info": "dim", "warning": "yellow", "error": "bold red"}


def fmt(value: Any, spec: str = ".4f") -> str:
    return number(value, spec, "nan")


class PlainProgress(Callback):
    """Prints on the main process only; rich styling is dropped automatically when stdout is not a terminal."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)

    def print(self, text: str) -> None:
        # soft_wrap: a log line stays one line in a file, whatever the (default 80) console width.
        self.console.print(text, soft_wrap=True)

    def on_train_start(self, trainer: TrainerView) -> None:
        if not trainer.is_main:
            return
        cfg = trainer.cfg
        self.total_steps = steps = trainer.total_steps()
        self.print(
            f"[bold]training[/] {cfg.model.backbone} DETR on {trainer.device} (world size {trainer.world_size}, "
            f"amp {cfg.train.amp}) — {len(trainer.train_set)} images, {steps} steps, run folder {trainer.output_dir}"
        )

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        if record is None or not trainer.is_main:
            return
        parts = " ".join(f"{k.removeprefix('loss_')} {fmt(record.get(k), '.3f')}" for k in LOSS_TERMS if k in record)
        ips = record.get("images_per_s")
        self.print(
            f"step {record['step']}/{self.total_steps} epoch {record['epoch']} loss {fmt(record['loss'])} ({parts}) "
            f"grad {fmt(record['grad_norm'], '.2f')} lr {record['lr']:.2e} "
            f"{fmt(ips, '.1f')} img/s data {100 * record['data_time_s'] / max(record['step_time_s'], 1e-9):.0f}%"
            + (" [yellow]skipped[/]" if record.get("skipped") else "")
        )

    def on_eval(self, trainer: TrainerView, record: EvalRecord) -> None:
        if trainer.is_main:
            weights = " (EMA weights)" if record.get("ema") else ""
            self.print(
                f"[bold green]eval[/] step {record['step']}{weights}: AP {fmt(record.get('AP'), '.3f')} "
                f"AP50 {fmt(record.get('AP50'), '.3f')} AP75 {fmt(record.get('AP75'), '.3f')} "
                f"({fmt(record.get('eval_time_s'), '.1f')} s)"
            )

    def on_event(self, trainer: TrainerView, event: EventRecord) -> None:
        if trainer.is_main:
            style = SEVERITY_STYLE.get(event.get("severity", "info"), "")
            self.print(f"[{style}]{event['kind']}[/] step {event['step']}: {escape(event['message'])}")

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        if not trainer.is_main:
            return
        ev = summary.get("last_eval") or {}
        code = summary.get("exit_code", 0)
        self.print(
            (f"[bold red]stopped[/] (exit {code}) after" if code else "[bold]done[/]")
            + f" {summary['steps']} steps in {summary['elapsed_s']:.0f} s"
            + (f", AP {fmt(ev.get('AP'), '.3f')} AP50 {fmt(ev.get('AP50'), '.3f')}" if ev else "")
            + f" — checkpoint {summary['checkpoint']}"
        )
