"""The paper's optimiser: AdamW with a separate backbone learning rate, and a StepLR drop."""

from __future__ import annotations

import torch
from torch import nn

from detr.config import TrainConfig


def parameter_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Two groups, as in the official code: the backbone at `lr_backbone`, everything else at `lr`."""
    backbone: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr_backbone})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, fused (one pass over each tensor instead of a dozen).

    On the CPU too: a ResNet-18's step (11.7M parameters) took ~50 ms fused against ~220 ms foreach on 2 cores.
    """
    fused = next(model.parameters()).device.type in ("cuda", "cpu")
    return torch.optim.AdamW(
        parameter_groups(model, cfg),
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        fused=True if fused else None,
        foreach=None if fused else True,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.StepLR:
    """Multiply every learning rate by `lr_drop_factor` after `lr_drop` epochs."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_drop, gamma=cfg.lr_drop_factor)
