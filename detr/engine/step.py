"""The training step — the only one: the trainer runs it, memprofile measures it, the watchdog replays its loss.

forward under autocast → weighted loss from the criterion's own terms → backward (through the GradScaler
under fp16) → every parameter's gradient norm in one fused pass → (callbacks may veto) → clipping →
optimizer step → weight average. The order is the memory profile too: the previous step's gradients are
cleared only after the forward, so they are alive at its end beside the activations and optimizer state.

With `micro_batch_size` smaller than the batch, forward and backward run per micro-batch and the gradients
accumulate before the one optimizer step: the same update as the whole batch's, with the activations of a
micro-batch only (see `TrainingStep.run`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from detr.engine.ema import ModelEMA
from detr.torch_private import foreach_mul_, foreach_norm

Phase = Callable[[str], AbstractContextManager]  # entered around "forward", "backward", "clip" and "optimizer"


def no_phase(_name: str) -> AbstractContextManager:
    return nullcontext()


def weighted_loss(loss_dict: dict[str, Tensor], weight_dict: dict[str, float]) -> Tensor:
    """The optimised total: each weighted term summed in the weight table's order (so always the same bits)."""
    # a Tensor: the criterion computes at least one weighted term (sum() of nothing would be the int 0)
    return cast(Tensor, sum(loss_dict[k] * w for k, w in weight_dict.items() if k in loss_dict))


class Criterion(Protocol):
    """What the step needs of a loss (detr.criterion.SetCriterion, or a profiled model's own)."""

    weight_dict: dict[str, float]  # the optimised terms and their weights

    def __call__(
        self, outputs: Any, targets: list[dict[str, Any]], batch_targets: list[dict[str, Any]] | None = None
    ) -> dict[str, Tensor]: ...


@dataclass
class StepResult:
    """What one step produced; the gradient norms are before clipping, all left on the device."""

    loss: Tensor  # weighted total, unscaled
    loss_dict: dict[str, Tensor]
    param_norms: Tensor  # per trainable parameter, in `TrainingStep.grad_params` order
    grad_norm: Tensor
    stepped: bool = False  # False when vetoed after the backward
    timings: dict[str, float] = field(default_factory=dict)  # seconds: forward (with the loss), backward, optimizer


class TrainingStep:
    """The model, its loss, the optimizer and the trimmings (GradScaler, clipping, EMA) of one training step.

    `grad_params` are the trainable parameters, whose order `param_norms` follows.
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: Criterion,
        optimizer: torch.optim.Optimizer,
        grad_params: Sequence[nn.Parameter],
        *,
        device_type: str,
        amp_dtype: torch.dtype | None,
        clip_max_norm: float,
        scaler: torch.amp.GradScaler | None = None,
        ema: ModelEMA | None = None,
        micro_batch_size: int | None = None,
    ):
        self.model, self.criterion, self.optimizer = model, criterion, optimizer
        self.grad_params = list(grad_params)
        self.device_type, self.amp_dtype = device_type, amp_dtype
        self.clip_max_norm, self.scaler, self.ema = clip_max_norm, scaler, ema
        self.micro_batch_size = micro_batch_size  # None: the whole batch in one forward pass
        self.updating = False  # True while the optimizer changes the weights: a failure then leaves them torn
        self._unscaled = False  # the GradScaler unscaled this step's gradients and awaits its update()

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(
            self.device_type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def loss(
        self,
        images: Tensor,
        mask: Tensor,
        targets: list[dict[str, Any]],
        autocast: AbstractContextManager | None = None,
        batch_targets: list[dict[str, Any]] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Forward under autocast and the weighted loss (computed in float32 by the criterion); for a
        micro-batch of `batch_targets`, its share of the batch's loss (the criterion weighs each term)."""
        with autocast or self.autocast():
            outputs = self.model(images, mask)
        loss_dict = (
            self.criterion(outputs, targets)
            if batch_targets is None
            else self.criterion(outputs, targets, batch_targets=batch_targets)
        )
        return weighted_loss(loss_dict, self.criterion.weight_dict), loss_dict

    def micro_batches(self, batch_size: int) -> list[slice]:
        """The slices of a batch that run one forward pass each: all of it, or micro_batch_size at a time
        (the last may be smaller: each is weighted by its share of the batch's loss, so sizes may differ)."""
        size = self.micro_batch_size or batch_size
        return [slice(start, min(start + size, batch_size)) for start in range(0, batch_size, size)]

    def _forward_backward(
        self,
        images: Tensor,
        mask: Tensor,
        targets: list[dict[str, Any]],
        phase: Phase,
        backward: Callable[[Tensor], None],
        autocast: AbstractContextManager | None,
    ) -> tuple[Tensor, dict[str, Tensor], float, float]:
        """The batch's loss and gradients, micro-batch by micro-batch; (loss, terms, forward s, backward s).

        Padding stays the batch's (slices of the padded tensors), so every image is computed as in the whole
        batch. A micro-batch's loss is its share of the batch's (`SetCriterion.micro_batch_shares`), so the
        accumulated gradient is the batch's to rounding, whatever the micro-batches' box counts. Under DDP
        the gradients are averaged over the ranks once, with the last micro-batch's backward. The gradients
        of the previous step are cleared after the first forward, as without accumulation.
        """
        clock = time.perf_counter
        parts = self.micro_batches(len(targets))
        whole = None if len(parts) == 1 else targets
        no_sync = getattr(self.model, "no_sync", None)  # DDP's: no gradient all-reduce before the last part
        forward_s = backward_s = 0.0
        loss = torch.zeros(())
        loss_dict: dict[str, Tensor] = {}
        for i, part in enumerate(parts):
            t0 = clock()
            with phase("forward"):
                part_loss, part_terms = self.loss(images[part], mask[part], targets[part], autocast, whole)
            t1 = clock()
            if i == 0:
                self.optimizer.zero_grad(set_to_none=True)
            last = i == len(parts) - 1
            with phase("backward"), no_sync() if no_sync is not None and not last else nullcontext():
                backward(self.scaler.scale(part_loss) if self.scaler is not None else part_loss)
            forward_s, backward_s = forward_s + t1 - t0, backward_s + clock() - t1
            if whole is None:  # the step's own tensors, as without accumulation
                return part_loss, part_terms, forward_s, backward_s
            loss = part_loss.detach() + loss.to(part_loss.device)
            loss_dict = {k: v.detach() + loss_dict.get(k, 0.0) for k, v in part_terms.items()}
        return loss, loss_dict, forward_s, backward_s

    def run(
        self,
        images: Tensor,
        mask: Tensor,
        targets: list[dict[str, Any]],
        *,
        after_backward: Callable[[StepResult], bool] | None = None,
        phase: Phase = no_phase,
        backward: Callable[[Tensor], None] = Tensor.backward,
        autocast: AbstractContextManager | None = None,
    ) -> StepResult:
        """One step over the batch (in micro-batches when `micro_batch_size` is smaller). `after_backward(result)`
        sees the unscaled gradients' norms and returns True to skip the optimizer step; `phase`, `backward` and
        `autocast` let memprofile account for and drive the step."""
        clock = time.perf_counter
        loss, loss_dict, forward_s, backward_s = self._forward_backward(
            images, mask, targets, phase, backward, autocast
        )
        t2 = clock()
        with phase("clip"):
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
                self._unscaled = True
            grads = [p.grad if p.grad is not None else torch.zeros((), device=p.device) for p in self.grad_params]
            # One fused pass gives every parameter's norm: the total, the clip and the watchdog all reuse it.
            param_norms = foreach_norm(grads)
            result = StepResult(loss, loss_dict, param_norms, torch.linalg.vector_norm(param_norms))
        skip = after_backward(result) if after_backward is not None else False
        if not skip:
            with phase("clip"):
                if self.clip_max_norm > 0:
                    foreach_mul_(grads, torch.clamp(self.clip_max_norm / (result.grad_norm + 1e-6), max=1.0))
            del grads
            with phase("optimizer"):
                self.updating = True
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                else:
                    self.optimizer.step()
                if self.ema is not None:
                    self.ema.update()
                self.updating = False
            result.stepped = True
        if self.scaler is not None:
            self.scaler.update()
            self._unscaled = False
        # The veto's own time (the callbacks) counts as the optimizer phase's, as it always has.
        result.timings.update(forward=forward_s, backward=backward_s, optimizer=clock() - t2)
        return result

    def abandon(self) -> None:
        """Forget a step that failed part-way (out of memory), so that it can run again: a GradScaler that
        already unscaled its gradients is closed with update(), as after a skipped step (unscale_ may run
        once per update)."""
        if self.scaler is not None and self._unscaled:
            self.scaler.update()
        self._unscaled = self.updating = False

    def clip_ratio(self, grad_norm: float) -> float:
        """How much clipping scales the gradients (1.0: not at all), from a host copy of the total norm."""
        if self.clip_max_norm <= 0 or not grad_norm > 0:
            return 1.0
        return min(1.0, self.clip_max_norm / (grad_norm + 1e-6))
