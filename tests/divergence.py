"""A divergence built deterministically, so the watchdog's lead, escalation and rollback are tested by
construction on any CPU and thread count (measured divergences of real runs live in benchmarks/divergence_leads.py).

From step `grow_from` on, the decoder's output (a DETR part whose largest value the watchdog reads every step)
is multiplied by `factor` once more each step: ×factor, ×factor², … In the backward pass the multiplication is
invisible (the added part is detached), so the decoder's gradients stay what they were, and the heads see
large but finite inputs: at ×10 per step the largest value reaches ~1e13 by step 14, its square ~1e26, far below
float32's 3e38 — nothing turns non-finite on its own. At the steps in `nonfinite_at` the factor is infinite for
that step alone: the first non-finite loss comes exactly there.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from detr.engine.callbacks import Callback, StepContext, TrainerView

MODULE = "transformer.decoder"
PART = "decoder"  # its name in detr.model.MODEL_PARTS, which the watchdog's events use


class ScheduledGrowth(Callback):
    def __init__(self, grow_from: int, factor: float, nonfinite_at: range | int, grow_until: int | None = None):
        self.grow = range(grow_from, grow_until if grow_until is not None else 10**9)
        self.factor = factor
        self.nonfinite = nonfinite_at if isinstance(nonfinite_at, range) else range(nonfinite_at, nonfinite_at + 1)
        self.scale = 1.0

    def on_train_start(self, trainer: TrainerView) -> None:
        # prepend: the watchdog's own hook on the decoder, registered earlier, must see the scaled output
        trainer.model_without_ddp.get_submodule(MODULE).register_forward_hook(self.apply, prepend=True)

    def on_step_start(self, trainer: TrainerView, ctx: StepContext) -> None:
        if ctx.step in self.nonfinite:
            self.scale = math.inf
        elif ctx.step in self.grow:
            self.scale = self.factor ** (ctx.step - self.grow.start + 1)
        else:
            self.scale = 1.0

    def apply(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self.scale == 1.0:
            return None
        return output + (self.scale - 1.0) * output.detach()
