"""`train --tensorboard`: the metrics.jsonl records, also written for TensorBoard into <run folder>/tensorboard/.

Step records become `train/<field>` scalars, eval records `eval/<field>`, events text under `events/<kind>`;
the values are metrics.jsonl's own (one record, two writers), on the main process only.
"""

from __future__ import annotations

from typing import Any

from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.metrics import EvalRecord, EventRecord, StepRecord
from detrdoctor.extras import require

SKIPPED_FIELDS = ("type", "step", "epoch")


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a record (flags such as `skipped` and missing values left out)."""
    return {
        key: float(value)
        for key, value in record.items()
        if key not in SKIPPED_FIELDS and isinstance(value, (int, float)) and not isinstance(value, bool)
    }


class TensorBoardWriter(Callback):
    """Created before the trainer (so a missing package stops `train` before anything is written)."""

    def __init__(self) -> None:
        self._summary_writer = require(
            "torch.utils.tensorboard", "tensorboard", "tensorboard", "--tensorboard"
        ).SummaryWriter
        self.writer = None

    def on_train_start(self, trainer: TrainerView) -> None:
        if trainer.is_main:
            self.writer = self._summary_writer(log_dir=str(trainer.output_dir / "tensorboard"), flush_secs=10)

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        if self.writer is not None and record is not None:
            for key, value in scalars(record).items():
                self.writer.add_scalar(f"train/{key}", value, record["step"])

    def on_eval(self, trainer: TrainerView, record: EvalRecord) -> None:
        if self.writer is not None:
            for key, value in scalars(record).items():
                self.writer.add_scalar(f"eval/{key}", value, record["step"])
            self.writer.flush()

    def on_event(self, trainer: TrainerView, event: EventRecord) -> None:
        if self.writer is not None:
            self.writer.add_text(
                f"events/{event['kind']}", f"**{event['severity']}** {event['message']}", event["step"]
            )

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
