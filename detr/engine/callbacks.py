"""Extension points of the training loop: small callbacks, not a framework.

The trainer calls every hook of every callback in order. Hooks see the trainer through `TrainerView` —
the attributes and methods below are the whole contract; anything else on the Trainer may change —
and a StepContext. A callback that must veto an optimizer step sets `ctx.skip_step = True` in
`after_backward`; one that must end the run calls `trainer.request_stop(reason, exit_code)`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from detr.config import RunConfig
from detr.engine.ema import ModelEMA
from detr.engine.metrics import EvalRecord, EventRecord, StepRecord
from detr.engine.step import TrainingStep

if TYPE_CHECKING:
    from detr.criterion import SetCriterion
    from detr.data import CocoDetection
    from detr.model import DETR


class TrainerView(Protocol):
    """What a callback may read from the trainer (and the two things it may call)."""

    cfg: RunConfig
    device: torch.device
    amp_dtype: torch.dtype | None
    rank: int
    world_size: int
    is_main: bool  # rank 0: the only one that writes files and draws
    output_dir: Path
    model: nn.Module  # DDP-wrapped under torchrun
    model_without_ddp: DETR
    criterion: SetCriterion  # its `loss_terms` and `weight_dict` name and weigh the loss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None  # fp16 only
    ema: ModelEMA | None
    step: TrainingStep
    grad_params: list[tuple[str, nn.Parameter]]  # trainable parameters, the order of `ctx.param_norms`
    grad_param_names: list[str]
    train_set: CocoDetection
    train_loader: torch.utils.data.DataLoader
    global_step: int  # steps finished (during a step: including it)

    def total_steps(self) -> int: ...

    def autocast(self) -> AbstractContextManager: ...

    def emit_event(self, kind: str, message: str, severity: str = "info", **fields: Any) -> EventRecord: ...

    def request_stop(self, reason: str, exit_code: int = 1) -> None: ...


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
    param_norms: torch.Tensor | None = (
        None  # per-parameter grad norms (trainer.grad_param_names order), before clipping
    )
    grad_norm: torch.Tensor | None = None  # total grad norm before clipping
    skip_step: bool = False
    skip_reason: str = ""
    optimizer_stepped: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # seconds: data, forward, backward, optimizer, step


class Callback:
    """Override the hooks you need; all are no-ops here."""

    def on_train_start(self, trainer: TrainerView) -> None: ...

    def on_step_start(self, trainer: TrainerView, ctx: StepContext) -> None: ...

    def after_backward(self, trainer: TrainerView, ctx: StepContext) -> None:
        """Gradients are unscaled and their norms known; clipping and the optimizer step come next."""

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        """`record` is the step record written to metrics.jsonl on logging steps, else None."""

    def on_eval_start(self, trainer: TrainerView) -> None:
        """Evaluation begins: no step completes until `on_eval`."""

    def on_eval(self, trainer: TrainerView, record: EvalRecord) -> None: ...

    def on_event(self, trainer: TrainerView, event: EventRecord) -> None: ...

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints (under the callback's class name) so a resumed run continues its state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
