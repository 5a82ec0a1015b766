"""Extension points of the training loop: small callbacks, not a framework.

The trainer calls every hook of every callback in order. Hooks see the trainer and a StepContext;
a callback that must veto an optimizer step sets `ctx.skip_step = True` in `after_backward`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from detr.engine.trainer import Trainer


@dataclass
class StepContext:
    """What one training step produced, filled in as the step goes."""

    step: int  # global step number, 1-based, of the step being run
    epoch: int
    batch_in_epoch: int  # 0-based index of this batch in the epoch
    images: torch.Tensor
    mask: torch.Tensor
    targets: list[dict[str, Any]]
    loss: torch.Tensor | None = None  # weighted total, unscaled
    loss_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    param_norms: torch.Tensor | None = None  # per-parameter grad norms (trainer.grad_param_names order), before clipping
    grad_norm: torch.Tensor | None = None  # total grad norm before clipping
    skip_step: bool = False
    skip_reason: str = ""
    optimizer_stepped: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds: data, forward, backward, optimizer, step


class Callback:
    """Override the hooks you need; all are no-ops here."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_start(self, trainer: Trainer, ctx: StepContext) -> None: ...

    def after_backward(self, trainer: Trainer, ctx: StepContext) -> None:
        """Gradients are unscaled and their norms known; clipping and the optimizer step come next."""

    def on_step_end(self, trainer: Trainer, ctx: StepContext, record: dict[str, Any] | None) -> None:
        """`record` is the step record written to metrics.jsonl on logging steps, else None."""

    def on_eval_start(self, trainer: Trainer) -> None:
        """Evaluation begins: no step completes until `on_eval`."""

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_event(self, trainer: Trainer, event: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints (under the callback's class name) so a resumed run continues its state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
