"""One training step of a profile's model on a synthetic batch: the trainer's own step (detr.engine.step),
on a model built for memprofile's device (a fake CUDA one when estimating)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detr.config import RunConfig
from detr.engine.step import Criterion, Phase, TrainingStep, no_phase
from detrdoctor.memprofile.groups import group_of

# Objects per synthetic image: COCO's mean is about 7; the loss's memory hardly depends on it.
BOXES_PER_IMAGE = 10


@dataclass
class Batch:
    """A padded batch as the data loader gives it: images, padding mask (True on padding), targets."""

    images: Tensor
    mask: Tensor
    targets: list[dict[str, Tensor]]


def synthetic_batch(
    batch_size: int, shape: tuple[int, int], num_classes: int | str, device: torch.device | str, seed: int = 0
) -> Batch:
    """`batch_size` images of exactly `shape` (no padding: the worst case) with random boxes."""
    assert isinstance(num_classes, int), "num_classes is resolved with the plan (memprofile.plan)"
    generator = torch.Generator().manual_seed(seed)
    h, w = shape
    targets = []
    for _ in range(batch_size):
        centre = 0.25 + 0.5 * torch.rand(BOXES_PER_IMAGE, 2, generator=generator)
        size = 0.05 + 0.4 * torch.rand(BOXES_PER_IMAGE, 2, generator=generator)
        labels = torch.randint(0, num_classes, (BOXES_PER_IMAGE,), generator=generator)
        targets.append({"labels": labels.to(device), "boxes": torch.cat([centre, size], 1).to(device)})
    images = torch.randn(batch_size, 3, h, w, device=device)
    mask = torch.zeros(batch_size, h, w, dtype=torch.bool, device=device)
    return Batch(images, mask, targets)


class ProfiledStep:
    """The profile's model, loss and optimizer on `device`, stepped by the trainer's own `TrainingStep`
    (forward, loss, backward, gradient norms and clipping, optimizer, GradScaler under fp16 on a GPU, EMA).

    `phase(name)` is entered around "forward", "backward", "clip" and "optimizer", for accounting;
    `build` replaces DETR (see resolve_build); without `grad_scaler` fp16 runs unscaled.
    """

    def __init__(
        self,
        cfg: RunConfig,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        phase: Phase = no_phase,
        build: Callable[[RunConfig], tuple[nn.Module, Criterion]] | None = None,
        grad_scaler: bool = True,
    ):
        from detr.engine.ema import ModelEMA
        from detr.engine.optim import build_optimizer

        self.cfg, self.device, self.amp_dtype, self.phase = cfg, device, amp_dtype, phase
        # Built directly on the device: fake CUDA tensors cannot be moved there afterwards.
        builder: Callable[[RunConfig], tuple[nn.Module, Criterion]] = build or build_detr
        with torch.device(device):
            self.model, self.criterion = builder(cfg)
        if cfg.train.channels_last and device.type == "cuda":
            self.model.backbone.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.grad_params = [p for p in self.model.parameters() if p.requires_grad]
        # The trainer's weight average, when the profile keeps one: a second copy of the weights.
        self.ema = ModelEMA(self.model, cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
        use_scaler = grad_scaler and amp_dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.training_step = TrainingStep(
            self.model,
            self.criterion,
            self.optimizer,
            self.grad_params,
            device_type=device.type,
            amp_dtype=amp_dtype,
            clip_max_norm=cfg.train.clip_max_norm,
            scaler=self.scaler,
            ema=self.ema,
        )

    def ema_tensors(self) -> list[Tensor]:
        """The weight average's tensors (none without one), for the "ema" group of the breakdown."""
        return list(self.ema.module.state_dict().values()) if self.ema is not None else []

    def weights_by_group(self) -> list[tuple[str, Tensor]]:
        """(breakdown group, tensor) for every parameter and buffer, and for the weight average's copy ("ema")."""
        named = [*self.model.named_parameters(), *self.model.named_buffers()]
        return [(group_of(name), tensor) for name, tensor in named] + [("ema", t) for t in self.ema_tensors()]

    def prime(self) -> None:
        """The state after a first step: gradients present and the optimizer's moments allocated."""
        with torch.no_grad():
            for p in self.grad_params:
                p.grad = torch.zeros_like(p)
        with self.phase("optimizer"):
            self.optimizer.step()

    def step(
        self,
        batch: Batch,
        backward: Callable[[Tensor], None] = Tensor.backward,
        autocast: AbstractContextManager | None = None,
    ) -> None:
        """One optimisation step; `backward(loss)` fills the gradients; `autocast`, if given, replaces
        torch.autocast over the forward pass."""
        self.training_step.run(
            batch.images, batch.mask, batch.targets, phase=self.phase, backward=backward, autocast=autocast
        )


def resolve_build(spec: str | None) -> Callable[[RunConfig], tuple[nn.Module, Criterion]]:
    """A "module:function" that builds (model, criterion) from a RunConfig; None means DETR."""
    if spec is None:
        return build_detr
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def build_detr(cfg: RunConfig) -> tuple[nn.Module, Criterion]:
    """DETR and its loss as the trainer builds them (the backbone trains when lr_backbone > 0)."""
    from detr import build_model

    model, criterion, _ = build_model(cfg.model, train_backbone=cfg.train.lr_backbone > 0)
    return model, criterion
