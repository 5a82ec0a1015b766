"""What the watchdog reads from the device, in one host transfer per step.

Per step: the losses, the total and per-group gradient norms (summed from the per-parameter norms of the
training step's single fused pass), the first non-finite parameter, the loss scale, and the largest output
of each module group (one max per group, from forward hooks). Every `sample_every` steps also the
attention logits and every conv/linear output, and the update-to-weight ratio per group (computed after
the optimizer step and left on the device until the next step's transfer).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from detr.engine.callbacks import StepContext, TrainerView
from detr.model import model_part
from detr.torch_private import foreach_norm, foreach_sub, scaler_scale
from detrdoctor.watchdog.groups import GROUPS, OUTPUT_MODULES, ForwardOrder, forward_rank
from detrdoctor.watchdog.signals import StepStats


def max_abs(output: Any) -> torch.Tensor | None:
    """max |x| of a module's output (its first tensor), kept on the device."""
    if isinstance(output, (tuple, list)):
        output = next((o for o in output if torch.is_tensor(o)), None)
    if not torch.is_tensor(output) or not output.is_floating_point():
        return None
    return torch.linalg.vector_norm(output.detach(), ord=math.inf)


@torch.no_grad()
def attention_logits(attn: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """q·k/√d of an nn.MultiheadAttention call, [batch·heads, queries, keys], recomputed from its input projections."""
    if attn.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    w_q, w_k, _ = attn.in_proj_weight.chunk(3)
    b_q, b_k = attn.in_proj_bias.chunk(3)[:2] if attn.in_proj_bias is not None else (None, None)
    head_dim = attn.embed_dim // attn.num_heads

    def heads(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        x = nn.functional.linear(x, w, b)  # [L, B, E]
        return x.reshape(x.shape[0], -1, head_dim).transpose(0, 1)  # [B·heads, L, head_dim]

    return torch.bmm(heads(query, w_q, b_q) * head_dim**-0.5, heads(key, w_k, b_k).transpose(1, 2))


def overflow_limit(amp_dtype: torch.dtype | None) -> float:
    """Values beyond the AMP dtype's largest overflow; beyond √(float32 max) their squares do, and LayerNorm's
    variance, the norms and the GIoU areas square them in float32 even under autocast."""
    return min(torch.finfo(amp_dtype or torch.float32).max, math.sqrt(torch.finfo(torch.float32).max))


class DeviceReadout:
    """The forward hooks on the model and the one transfer per step that turns them into StepStats."""

    def __init__(self, sample_every: int):
        self.sample_every = sample_every
        self.groups: list[str] = []  # the module groups this model has, in GROUPS order
        self.param_names: list[str] = []
        self.update_ratios: dict[str, float] | None = None  # the latest ‖Δw‖ / ‖w‖ per group
        self._group_index: torch.Tensor | None = None  # parameter → its group's position in `groups`
        self._forward_order: ForwardOrder | None = None
        self._forward_rank: torch.Tensor | None = None  # parameter → position in forward order
        self._by_rank: list[int] = []  # position in forward order → parameter
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._sample_hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._sampled: dict[str, torch.Tensor] = {}
        self._weights_before: list[torch.Tensor] | None = None
        self._pending_update_ratios: torch.Tensor | None = None

    def is_sample_step(self, step: int) -> bool:
        return self.sample_every > 0 and step % self.sample_every == 0

    # ------------------------------------------------------------------ hooks
    def attach(self, trainer: TrainerView) -> None:
        names = trainer.grad_param_names
        self.param_names = names
        present = {model_part(n) for n in names}
        self.groups = [g for g in GROUPS if g in present]
        self._group_index = torch.tensor([self.groups.index(model_part(n)) for n in names], device=trainer.device)
        self._forward_order = ForwardOrder(trainer.model_without_ddp)  # read after the first forward
        for group, path in OUTPUT_MODULES.items():
            try:
                module = trainer.model_without_ddp.get_submodule(path)
            except AttributeError:  # not DETR's layout: that group goes unwatched
                continue
            self._hooks.append(module.register_forward_hook(self._output_hook(group)))

    def _output_hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            value = max_abs(output)
            if value is not None:
                self._outputs[name] = value

        return hook

    def _attach_sampling_hooks(self, model: nn.Module) -> None:
        """Attention logits and every conv/linear output, for this step's forward only."""
        for name, module in model.named_modules():
            if isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim:

                def pre_hook(m: nn.MultiheadAttention, args: tuple, kwargs: dict, name: str = name) -> None:
                    query = args[0] if args else kwargs["query"]
                    key = args[1] if len(args) > 1 else kwargs["key"]
                    value = max_abs(attention_logits(m, query, key))
                    if value is not None:
                        self._sampled[f"{name}.logits"] = value

                self._sample_hooks.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
            elif isinstance(module, (nn.Conv2d, nn.Linear)):

                def hook(m: nn.Module, args: tuple, output: Any, name: str = name) -> None:
                    value = max_abs(output)
                    if value is not None:
                        self._sampled[name] = value

                self._sample_hooks.append(module.register_forward_hook(hook))

    def _detach_sampling_hooks(self) -> None:
        for handle in self._sample_hooks:
            handle.remove()
        self._sample_hooks.clear()

    def detach(self) -> None:
        """The run ends: hooks off, and the last step's update ratios read."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if self._pending_update_ratios is not None:
            self.update_ratios = dict(zip(self.groups, self._pending_update_ratios.tolist()))
            self._pending_update_ratios = None

    # ------------------------------------------------------------------ per step
    def start_step(self, model: nn.Module, step: int) -> None:
        self._outputs.clear()
        self._sampled.clear()
        if self.is_sample_step(step):
            self._attach_sampling_hooks(model)

    def read(self, trainer: TrainerView, ctx: StepContext) -> StepStats:
        """Everything the watchdog needs from the device, in one transfer."""
        self._detach_sampling_hooks()
        device_loss, param_norms, device_grad_norm = ctx.loss, ctx.param_norms, ctx.grad_norm
        assert device_loss is not None and param_norms is not None and device_grad_norm is not None, "after backward"
        assert self._group_index is not None, "attach() first"
        if self._forward_rank is None:
            assert self._forward_order is not None  # attach() set it, the first forward filled it
            ranks = forward_rank(self.param_names, self._forward_order.close())
            self._forward_rank = torch.tensor(ranks, device=param_norms.device)
            self._by_rank = sorted(range(len(ranks)), key=ranks.__getitem__)
        components = [k for k in trainer.criterion.loss_terms if k in ctx.loss_dict]
        losses = torch.stack([device_loss.detach().float()] + [ctx.loss_dict[k].detach().float() for k in components])
        if trainer.world_size > 1:  # gradients are already averaged; the losses must agree across ranks too
            dist.all_reduce(losses)
            losses /= trainer.world_size
        norms = param_norms.float()
        group_norms = (
            torch.zeros(len(self.groups), device=norms.device).index_add_(0, self._group_index, norms.square()).sqrt()
        )
        bad = ~torch.isfinite(norms)
        culprit_rank = torch.where(bad, self._forward_rank, -1).max()
        scale = (
            scaler_scale(trainer.scaler).float().reshape(1) if trainer.scaler is not None else norms.new_empty(0)
        )  # the scale this step was taken with
        outputs, sampled = list(self._outputs), list(self._sampled)
        update_ratios = self._pending_update_ratios if self._pending_update_ratios is not None else norms.new_empty(0)
        values = torch.cat(
            [
                losses,
                device_grad_norm.detach().float().reshape(1),
                group_norms,
                torch.stack([culprit_rank, bad.sum()]).float(),
                scale,
                torch.stack([self._outputs[k].float() for k in outputs]) if outputs else norms.new_empty(0),
                torch.stack([self._sampled[k].float() for k in sampled]) if sampled else norms.new_empty(0),
                update_ratios,
            ]
        ).tolist()
        self._pending_update_ratios = None
        take = iter(values)
        loss = next(take)
        component_values: dict[str, float] = {k: next(take) for k in components}
        grad_norm = next(take)
        group_values = {g: next(take) for g in self.groups}
        rank, bad_params = int(next(take)), int(next(take))
        loss_scale = next(take) if trainer.scaler is not None else None
        activations = {k: next(take) for k in outputs}
        sampled_values = {k: next(take) for k in sampled}
        if len(update_ratios):
            self.update_ratios = {g: next(take) for g in self.groups}
        return StepStats(
            ctx.step,
            loss,
            component_values,
            grad_norm,
            group_values,
            activations,
            sampled_values,
            amp_skipped=trainer.scaler is not None and bad_params > 0 and math.isfinite(loss),
            loss_scale=loss_scale,
            culprit=self.param_names[self._by_rank[rank]] if rank >= 0 else None,
            nonfinite_parameters=bad_params,
        )

    def keep_weights(self, trainer: TrainerView) -> None:
        """Before the optimizer step of a sample step: the weights its update ratios compare against."""
        self._weights_before = [p.detach().clone() for _, p in trainer.grad_params]

    def end_step(self, trainer: TrainerView, ctx: StepContext) -> None:
        """‖Δw‖ / ‖w‖ per group for the step just taken, left on the device until the next step's read."""
        before, self._weights_before = self._weights_before, None
        if before is None or not ctx.optimizer_stepped:
            return
        assert self._group_index is not None
        params = [p.detach() for _, p in trainer.grad_params]
        squares = foreach_norm(foreach_sub(params, before)).square(), foreach_norm(params).square()
        delta_sq, weight_sq = (
            torch.zeros(len(self.groups), device=s.device).index_add_(0, self._group_index, s) for s in squares
        )
        self._pending_update_ratios = (delta_sq / weight_sq.clamp_min(1e-30)).sqrt()
