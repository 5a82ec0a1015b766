"""The `batch_size_auto` event: how `--batch-size auto` chose, recorded when training starts."""

from __future__ import annotations

import dataclasses

from detr.engine.callbacks import Callback, TrainerView
from detrdoctor.memprofile.auto import AutoBatch


class AutoBatchEvent(Callback):
    """Emits the choice (printed with the run's log lines, and in metrics.jsonl) as training starts."""

    def __init__(self, choice: AutoBatch) -> None:
        self.choice = choice

    def on_train_start(self, trainer: TrainerView) -> None:
        fields = dataclasses.asdict(self.choice)
        fields["shape"] = list(self.choice.shape)
        trainer.emit_event("batch_size_auto", self.choice.describe(), **fields)
