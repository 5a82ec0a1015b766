"""The training state a rollback goes back to: model (and its weight average), optimizer and GradScaler.

Copied into host memory: several snapshots are kept (under the default `skip` too), and they must not take
device memory from training. Which snapshot a rollback restores is the policy's choice (policy.py).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from detr.engine.callbacks import TrainerView


@dataclass
class TrainingState:
    """Host copies of everything a rollback puts back."""

    model: dict[str, torch.Tensor]
    ema: tuple[dict[str, torch.Tensor], int] | None  # the weight average and its update count
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None


def host_copy(value: Any) -> Any:
    """A deep copy with every tensor in host memory."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: host_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(host_copy(v) for v in value)
    return copy.deepcopy(value)


def take_snapshot(trainer: TrainerView) -> TrainingState:
    ema = trainer.ema
    return TrainingState(
        model=host_copy(trainer.model_without_ddp.state_dict()),
        ema=(host_copy(ema.module.state_dict()), ema.updates) if ema else None,
        optimizer=host_copy(trainer.optimizer.state_dict()),
        scaler=copy.deepcopy(trainer.scaler.state_dict()) if trainer.scaler is not None else None,
    )


def restore_snapshot(trainer: TrainerView, state: TrainingState, lr_factor: float) -> list[float]:
    """Put `state` back with the learning rates in effect now × `lr_factor`; returns those rates."""
    lrs = [group["lr"] * lr_factor for group in trainer.optimizer.param_groups]
    trainer.model_without_ddp.load_state_dict(state.model)
    if state.ema is not None:
        assert trainer.ema is not None  # the snapshot was taken of this trainer
        trainer.ema.load(*state.ema)
    # A copy: the optimizer may adopt the loaded tensors as its state and update them in place.
    trainer.optimizer.load_state_dict(copy.deepcopy(state.optimizer))
    if trainer.scaler is not None:
        assert state.scaler is not None
        trainer.scaler.load_state_dict(state.scaler)
    for group, lr in zip(trainer.optimizer.param_groups, lrs):
        group["lr"] = lr
    return lrs
