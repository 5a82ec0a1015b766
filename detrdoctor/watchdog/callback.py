"""GradientWatchdog: judges every step's gradients, loss and activations before the optimizer applies them.

Per step it reads one small tensor from the device: the losses, the total and per-group gradient norms
(summed from the per-parameter norms of the training step's single fused pass), the first
non-finite parameter, the loss scale, and the largest output of each module group (one max per group,
from forward hooks). Every `sample_every` steps it also samples attention logits and every conv/linear
output, and the update-to-weight ratio per group.

A non-finite loss or gradient never reaches the weights, whatever `--on-anomaly` says; `warn` only
leaves the early-warning signals without action. `skip` also drops the step of a gradient-norm or loss
spike, and escalates when dropping stops helping (`skip_streak` steps in a row, or more than `skip_share`
of the last `skip_window`): it rolls back once, then stops. `rollback` restores an in-memory snapshot
taken before the trouble began and lowers the learning rates; `stop` ends the run with a checkpoint and a
reproduction bundle (exit status 3). A stop after rollbacks checkpoints the last good state, and a run
whose steps were mostly dropped never ends with exit status 0.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, deque
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from detr.config import WatchdogConfig
from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.checkpointing import rng_state
from detr.engine.metrics import EventRecord, StepRecord
from detr.model import model_part
from detr.torch_private import foreach_norm, foreach_sub, scaler_scale
from detrdoctor.watchdog.bundle import locate_nonfinite, write_bundle
from detrdoctor.watchdog.groups import GROUPS, OUTPUT_MODULES, ForwardOrder, forward_rank
from detrdoctor.watchdog.signals import EVENT_KINDS, EarlyWarning, Signal, StepStats

ANOMALY_EXIT_CODE = 3  # `detrdoctor train` exit status after `--on-anomaly stop` (1: error, 2: bad input)
# Warnings of a trend toward overflow: their message ends with what to change.
TREND_KINDS = ("overflow_forecast", "activation_growth", "overflow_risk", "grad_norm_growth")


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


def remedy(trainer: TrainerView, module: str | None) -> str:
    """What to change against a growth toward overflow in `module`: its learning rate, or clipping."""
    lr = "--lr-backbone" if module == "backbone" else "--lr"
    clip = trainer.cfg.train.clip_max_norm
    clipping = (
        "enable gradient clipping (--clip-max-norm 0.1)" if clip <= 0 else f"clip harder (--clip-max-norm < {clip:g})"
    )
    return f"; lower the learning rate ({lr}) or {clipping}"


class GradientWatchdog(Callback):
    """Early warnings before a NaN, the culprit module when one comes, and `--on-anomaly` to survive it."""

    def __init__(self, cfg: WatchdogConfig):
        self.cfg = cfg
        self.rules = EarlyWarning(cfg, list(GROUPS))
        self.latest: dict[str, Any] = {}  # the last step's numbers, for live displays
        # Run totals, saved in checkpoints.
        self.events: Counter[str] = Counter()
        self.steps_skipped = 0
        self.amp_skipped_steps = 0
        self.rollbacks = 0
        self.clipped_steps = 0
        self.judged_steps = 0
        self.max_grad_norm: dict[str, Any] = {"value": 0.0, "step": None, "group": None}
        self.first_warning_step: int | None = None
        self.first_nonfinite_step: int | None = None
        self.last_warned: dict[str, int] = {}
        self.good_streak = 0
        self.trouble_since: int | None = None  # where the current run of warnings and dropped steps began
        self.skip_run = 0  # steps dropped in a row
        self.recent_drops: deque[bool] = deque(maxlen=cfg.skip_window)
        # Per-run machinery, set up in on_train_start.
        self.groups: list[str] = []
        self.param_names: list[str] = []
        self._forward_order: ForwardOrder | None = None
        self.forward_rank: torch.Tensor | None = None  # parameter → position in forward order
        self.by_rank: list[int] = []  # position in forward order → parameter
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._sample_hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._sampled: dict[str, torch.Tensor] = {}
        self._step_rng: dict[str, Any] | None = None
        self._weights_before: list[torch.Tensor] | None = None
        self._pending_update_ratios: torch.Tensor | None = None
        self._rollback_due: Signal | None = None
        self._restore_due = False  # a stop after rollbacks: checkpoint the last good state
        self._snapshots: deque[dict[str, Any]] = deque(maxlen=cfg.snapshots)  # oldest first
        self._steps_at_start = 0
        self._skipped_at_start = 0

    # ------------------------------------------------------------------ setup
    def on_train_start(self, trainer: TrainerView) -> None:
        names = trainer.grad_param_names
        device = trainer.device
        self.param_names = names
        present = {model_part(n) for n in names}
        self.groups = [g for g in GROUPS if g in present]
        self.group_index = torch.tensor([self.groups.index(model_part(n)) for n in names], device=device)
        self._forward_order = ForwardOrder(trainer.model_without_ddp)  # read after the first forward
        # Values beyond the AMP dtype's largest overflow; beyond √(float32 max) their squares do, and
        # LayerNorm's variance, the norms and the GIoU areas square them in float32 even under autocast.
        self.overflow_limit = min(
            torch.finfo(trainer.amp_dtype or torch.float32).max, math.sqrt(torch.finfo(torch.float32).max)
        )
        for group, path in OUTPUT_MODULES.items():
            try:
                module = trainer.model_without_ddp.get_submodule(path)
            except AttributeError:  # not DETR's layout: that group goes unwatched
                continue
            self._hooks.append(module.register_forward_hook(self._output_hook(group)))
        if self.cfg.on_anomaly in ("skip", "rollback"):
            self._snapshots.append(take_snapshot(trainer))
        self._steps_at_start, self._skipped_at_start = trainer.global_step, self.steps_skipped

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

    # ------------------------------------------------------------------ per step
    def is_sample_step(self, step: int) -> bool:
        return self.cfg.sample_every > 0 and step % self.cfg.sample_every == 0

    def on_step_start(self, trainer: TrainerView, ctx: StepContext) -> None:
        self._outputs.clear()
        self._sampled.clear()
        if self.cfg.on_anomaly in ("skip", "rollback", "stop") or self.cfg.detect_anomaly:
            self._step_rng = rng_state()  # what the forward's dropout draws from, for a re-run of this step
        if self.is_sample_step(ctx.step):
            self._attach_sampling_hooks(trainer.model_without_ddp)

    def after_backward(self, trainer: TrainerView, ctx: StepContext) -> None:
        self._detach_sampling_hooks()
        if self.forward_rank is None:
            assert self._forward_order is not None and ctx.param_norms is not None  # on_train_start; the backward
            rank = forward_rank(self.param_names, self._forward_order.close())
            self.forward_rank = torch.tensor(rank, device=ctx.param_norms.device)
            self.by_rank = sorted(range(len(rank)), key=rank.__getitem__)
        stats, culprit, bad_params = self.read_step(trainer, ctx)
        nonfinite = not math.isfinite(stats.loss) or (not math.isfinite(stats.grad_norm) and not stats.amp_skipped)
        if nonfinite:
            self.good_streak = 0
            self.handle_nonfinite(trainer, ctx, stats, culprit, bad_params)
        else:
            self.judge(trainer, ctx, stats)
        self.count_drop(trainer, ctx, stats)
        if not ctx.skip_step and self.is_sample_step(ctx.step):
            self._weights_before = [p.detach().clone() for _, p in trainer.grad_params]

    def read_step(self, trainer: TrainerView, ctx: StepContext) -> tuple[StepStats, str | None, int]:
        """Everything the watchdog needs from the device, in one transfer."""
        device_loss, param_norms, device_grad_norm = ctx.loss, ctx.param_norms, ctx.grad_norm
        assert device_loss is not None and param_norms is not None and device_grad_norm is not None, "after backward"
        assert self.forward_rank is not None  # after_backward sets it first
        components = [k for k in trainer.criterion.loss_terms if k in ctx.loss_dict]
        losses = torch.stack([device_loss.detach().float()] + [ctx.loss_dict[k].detach().float() for k in components])
        if trainer.world_size > 1:  # gradients are already averaged; the losses must agree across ranks too
            dist.all_reduce(losses)
            losses /= trainer.world_size
        norms = param_norms.float()
        group_norms = (
            torch.zeros(len(self.groups), device=norms.device).index_add_(0, self.group_index, norms.square()).sqrt()
        )
        bad = ~torch.isfinite(norms)
        culprit_rank = torch.where(bad, self.forward_rank, -1).max()
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
            self.latest["update_ratios"] = {g: next(take) for g in self.groups}
        amp_skipped = trainer.scaler is not None and bad_params > 0 and math.isfinite(loss)
        stats = StepStats(
            ctx.step,
            loss,
            component_values,
            grad_norm,
            group_values,
            activations,
            sampled_values,
            amp_skipped,
            loss_scale,
        )
        clip_ratio = trainer.step.clip_ratio(grad_norm) if math.isfinite(grad_norm) else 1.0
        self.latest.update(
            step=ctx.step,
            loss=loss,
            grad_norm=grad_norm,
            group_norms=group_values,
            clip_ratio=clip_ratio,
            loss_scale=loss_scale,
            amp_skipped=amp_skipped,
            activations=activations,
        )
        culprit = self.param_names[self.by_rank[rank]] if rank >= 0 else None
        return stats, culprit, bad_params

    def judge(self, trainer: TrainerView, ctx: StepContext, stats: StepStats) -> None:
        """A finite step: run the early-warning rules, act on a spike, keep the run totals."""
        if stats.amp_skipped:
            self.amp_skipped_steps += 1
        else:
            self.judged_steps += 1
            clip = trainer.cfg.train.clip_max_norm
            self.clipped_steps += clip > 0 and stats.grad_norm > clip
            if stats.grad_norm > self.max_grad_norm["value"]:
                group = max(stats.group_norms, key=stats.group_norms.__getitem__)
                self.max_grad_norm = {"value": stats.grad_norm, "step": ctx.step, "group": group}
        signals = self.rules.observe(stats, self.overflow_limit)
        if signals and self.trouble_since is None:
            # A trend was under way for as long as its rule looks back before it could be seen.
            lookback = {
                "overflow_forecast": self.cfg.forecast_steps,
                "activation_growth": self.cfg.growth_steps,
                "grad_norm_growth": self.cfg.growth_steps,
            }
            self.trouble_since = ctx.step - max(lookback.get(s.kind, 0) for s in signals)
        for signal in signals:
            if ctx.step - self.last_warned.get(signal.kind, -math.inf) > self.cfg.cooldown_steps:
                self.last_warned[signal.kind] = ctx.step
                if signal.kind in TREND_KINDS:
                    signal.message += remedy(trainer, signal.module)
                self.emit(
                    trainer,
                    signal.kind,
                    signal.message,
                    "warning",
                    signal.signal,
                    signal.value,
                    signal.threshold,
                    signal.module,
                )
        self.good_streak = 0 if signals else self.good_streak + 1
        action = next((s for s in signals if s.actionable), None)
        if action is not None and self.cfg.on_anomaly != "warn":
            self.act(trainer, ctx, action, stats)

    def handle_nonfinite(
        self, trainer: TrainerView, ctx: StepContext, stats: StepStats, culprit: str | None, bad_params: int
    ) -> None:
        """Name where the NaN/inf came from, and never let it reach the weights, whatever the mode."""
        if self.first_nonfinite_step is None:
            self.first_nonfinite_step = ctx.step
        if self.trouble_since is None:
            self.trouble_since = ctx.step
        if not math.isfinite(stats.loss):
            # Born in the forward: every gradient follows, so the gradients cannot tell where. The first
            # group (in forward order) whose output is non-finite can.
            born = next((g for g, v in stats.activations.items() if not math.isfinite(v)), None)
            upstream = {g: v for g, v in stats.activations.items() if math.isfinite(v)}
            broken = [k for k, v in stats.components.items() if not math.isfinite(v)]
            message = f"loss is {stats.loss}" + (f" ({', '.join(broken)})" if broken else "")
            if born is not None:
                message += f"; the forward first turns non-finite in the {born} output"
                if upstream:
                    largest = max(upstream, key=upstream.__getitem__)
                    message += f" (the {largest} output reached {upstream[largest]:.3g})"
            signal = Signal("nonfinite_loss", "loss", stats.loss, None, message, born)
            extra: dict[str, str | None] = {"parameter": None}
        else:
            group = model_part(culprit) if culprit else None
            signal = Signal(
                "nonfinite_grad",
                "grad_norm",
                stats.grad_norm,
                None,
                f"gradient norm is {stats.grad_norm} with a finite loss {stats.loss:.4g}; first "
                f"non-finite gradient in {group} ({culprit}), {bad_params} of {len(self.param_names)} "
                "parameters non-finite",
                group,
            )
            extra = {"parameter": culprit}
        self.emit(
            trainer,
            signal.kind,
            signal.message,
            "error",
            signal.signal,
            signal.value,
            None,
            signal.module,
            nonfinite_parameters=bad_params,
            **extra,
        )
        if self.cfg.detect_anomaly and self._step_rng is not None:
            found = locate_nonfinite(trainer, ctx, self._step_rng)
            self.emit(
                trainer,
                "nonfinite_op",
                found["message"],
                "error",
                "detect_anomaly",
                None,
                None,
                model_part(found["module"]) if found.get("module") else signal.module,
                op=found.get("op"),
                forward_module=found.get("module"),
                location=found.get("location"),
            )
        self.act(trainer, ctx, signal, stats)

    # ------------------------------------------------------------------ actions
    def act(self, trainer: TrainerView, ctx: StepContext, signal: Signal, stats: StepStats) -> None:
        """Drop this optimizer step; with rollback or stop, also restore a snapshot or end the run."""
        ctx.skip_step = True
        ctx.skip_reason = signal.kind
        self.steps_skipped += 1
        self.emit(
            trainer,
            "step_skipped",
            f"optimizer step {ctx.step} dropped: {signal.kind}",
            "warning",
            signal.signal,
            signal.value,
            signal.threshold,
            signal.module,
        )
        mode = self.cfg.on_anomaly
        if mode == "rollback" and self.rollbacks < self.cfg.max_rollbacks and self._snapshots:
            self._rollback_due = signal  # restored at the end of the step, after GradScaler's update
        elif mode == "rollback":
            self._restore_due = bool(self._snapshots)
            self.stop(trainer, ctx, signal, stats, f"{signal.kind} after {self.rollbacks} rollbacks", self.fix())
        elif mode == "stop":
            self.stop(trainer, ctx, signal, stats, signal.kind)

    def count_drop(self, trainer: TrainerView, ctx: StepContext, stats: StepStats) -> None:
        """Under `skip`, steps dropped `skip_streak` times in a row, or more than `skip_share` of the recent
        ones, mean the weights themselves are bad: roll back once, and stop if that does not help either."""
        dropped = ctx.skip_step
        self.recent_drops.append(dropped)
        self.skip_run = self.skip_run + 1 if dropped else 0
        if not dropped:
            if self.good_streak >= self.cfg.snapshot_every:
                self.trouble_since = None  # a clean stretch: the trouble is over
            return
        share = sum(self.recent_drops)
        if self.cfg.on_anomaly != "skip" or (
            self.skip_run < self.cfg.skip_streak and share <= self.cfg.skip_share * self.cfg.skip_window
        ):
            return
        streak = self.skip_run >= self.cfg.skip_streak
        why = (
            f"{self.skip_run} steps in a row dropped"
            if streak
            else f"{share} of the last {len(self.recent_drops)} steps dropped"
        ) + f" ({ctx.skip_reason})"
        signal = Signal(
            "skip_escalation",
            "steps_dropped",
            float(self.skip_run if streak else share),
            float(self.cfg.skip_streak if streak else self.cfg.skip_share * self.cfg.skip_window),
            why,
        )
        self.skip_run = 0
        self.recent_drops.clear()
        if self.rollbacks == 0 and self._snapshots:
            self._rollback_due = signal
        else:
            self._restore_due = bool(self._snapshots)
            after = f" after a rollback to step {self._snapshots[-1]['step']}" if self.rollbacks else ""
            self.stop(trainer, ctx, signal, stats, f"{why}{after}, skipping cannot save this run", self.fix())

    def fix(self) -> str:
        """The end of a stop message: what the checkpoint holds, and what to change."""
        if not self._snapshots:
            return "; lower the learning rate (--lr, --lr-backbone) or enable gradient clipping (--clip-max-norm 0.1)"
        return (
            f"; the checkpoint holds the last good state (step {self.rollback_target()['step']}) with learning "
            f"rates ×{self.cfg.rollback_lr_factor}: resume from it, or restart with a lower learning rate "
            "(--lr, --lr-backbone) or gradient clipping (--clip-max-norm 0.1)"
        )

    def stop(
        self, trainer: TrainerView, ctx: StepContext, signal: Signal, stats: StepStats, why: str, fix: str = ""
    ) -> None:
        reason = f"watchdog: {why} at step {ctx.step}{fix}"
        if trainer.is_main and self._step_rng is not None:
            observed = {
                "loss": stats.loss,
                "loss_dict": stats.components,
                "grad_norm": stats.grad_norm,
                "signal": signal.kind,
                "module": signal.module,
            }
            path = write_bundle(
                Path(trainer.output_dir) / f"repro-step{ctx.step}.pth", trainer, ctx, self._step_rng, observed
            )
            reason += f"; reproduction bundle {path} (replay: python -m detrdoctor.watchdog.bundle {path})"
        trainer.request_stop(reason, ANOMALY_EXIT_CODE)

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        if self._rollback_due is not None:
            self.rollback(trainer, ctx, self._rollback_due)
            self._rollback_due = None
        if self._restore_due:  # the run stops: its checkpoint gets the last good state, at a lower lr
            self.restore(trainer, self.rollback_target())
            self._restore_due = False
        if self._weights_before is not None:
            if ctx.optimizer_stepped:
                self._pending_update_ratios = self.update_ratios(trainer, self._weights_before)
            self._weights_before = None
        if (
            self._snapshots
            and ctx.optimizer_stepped
            and self.good_streak > 0
            and self.good_streak % self.cfg.snapshot_every == 0
        ):
            self._snapshots.append(take_snapshot(trainer))

    def rollback_target(self) -> dict[str, Any]:
        """The newest snapshot from before the current trouble began; one restored before and failed since
        gives way to the one before it. Snapshots after the target are on the bad path and are dropped."""
        onset = self.trouble_since if self.trouble_since is not None else math.inf
        while len(self._snapshots) > 1 and (self._snapshots[-1]["step"] >= onset or self._snapshots[-1]["restored"]):
            self._snapshots.pop()
        return self._snapshots[-1]

    def restore(self, trainer: TrainerView, snapshot: dict[str, Any]) -> list[float]:
        """Restore `snapshot` with the learning rates in effect now × rollback_lr_factor; returns them."""
        lrs = [group["lr"] * self.cfg.rollback_lr_factor for group in trainer.optimizer.param_groups]
        restore_snapshot(trainer, snapshot)
        for group, lr in zip(trainer.optimizer.param_groups, lrs):
            group["lr"] = lr
        snapshot["restored"] = True
        self.good_streak = 0
        for history in self.rules.activation_log.values():  # the restored weights start a new trend
            history.values.clear()
        return lrs

    def rollback(self, trainer: TrainerView, ctx: StepContext, signal: Signal) -> None:
        snapshot = self.rollback_target()
        lrs = self.restore(trainer, snapshot)
        self.rollbacks += 1
        limit = self.cfg.max_rollbacks if self.cfg.on_anomaly == "rollback" else 1
        self.emit(
            trainer,
            "rollback",
            f"restored the state of step {snapshot['step']} after {signal.kind} at step {ctx.step}"
            + (f" ({signal.message})" if signal.kind == "skip_escalation" else "")
            + f"; learning rates ×{self.cfg.rollback_lr_factor} (now {', '.join(f'{lr:.3g}' for lr in lrs)}); "
            f"rollback {self.rollbacks} of at most {limit}",
            "warning",
            signal.signal,
            signal.value,
            signal.threshold,
            signal.module,
            restored_step=snapshot["step"],
            lrs=lrs,
        )

    def update_ratios(self, trainer: TrainerView, before: list[torch.Tensor]) -> torch.Tensor:
        """‖Δw‖ / ‖w‖ per group for the step just taken, left on the device until the next step's read."""
        params = [p.detach() for _, p in trainer.grad_params]
        squares = foreach_norm(foreach_sub(params, before)).square(), foreach_norm(params).square()
        delta_sq, weight_sq = (
            torch.zeros(len(self.groups), device=s.device).index_add_(0, self.group_index, s) for s in squares
        )
        return (delta_sq / weight_sq.clamp_min(1e-30)).sqrt()

    # ------------------------------------------------------------------ events and summary
    def emit(
        self,
        trainer: TrainerView,
        kind: str,
        message: str,
        severity: str,
        signal: str | None,
        value: float | None,
        threshold: float | None,
        module: str | None,
        **extra: Any,
    ) -> None:
        if severity != "info" and self.first_warning_step is None:
            self.first_warning_step = trainer.global_step
        trainer.emit_event(
            kind, message, severity=severity, signal=signal, value=value, threshold=threshold, module=module, **extra
        )

    def on_event(self, trainer: TrainerView, event: EventRecord) -> None:
        if event["kind"] in EVENT_KINDS:
            self.events[event["kind"]] += 1

    def summary(self) -> dict[str, Any]:
        """The run's totals: `summary["watchdog"]` of `fit()`, and the `watchdog_summary` event.

        first_warning_step is the step of the first warning or error event; clipped_fraction counts the
        steps whose gradient norm exceeded clip_max_norm among those with finite gradients."""
        return {
            "steps_skipped": self.steps_skipped,
            "amp_skipped_steps": self.amp_skipped_steps,
            "rollbacks": self.rollbacks,
            "events": dict(self.events),
            "max_grad_norm": dict(self.max_grad_norm),
            "clipped_fraction": self.clipped_steps / self.judged_steps if self.judged_steps else 0.0,
            "first_warning_step": self.first_warning_step,
            "first_nonfinite_step": self.first_nonfinite_step,
            "update_ratios": self.latest.get("update_ratios"),
        }

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        steps, skipped = trainer.global_step - self._steps_at_start, self.steps_skipped - self._skipped_at_start
        if summary["exit_code"] == 0 and skipped > steps / 2:  # `warn`, or a run too short to escalate
            summary["exit_code"] = ANOMALY_EXIT_CODE
            self.emit(
                trainer,
                "mostly_skipped",
                f"{skipped} of this run's {steps} optimizer steps were dropped: the weights did not train" + self.fix(),
                "error",
                "steps_dropped",
                skipped,
                steps / 2,
                None,
            )
        if self._pending_update_ratios is not None:
            self.latest["update_ratios"] = dict(zip(self.groups, self._pending_update_ratios.tolist()))
            self._pending_update_ratios = None
        result = self.summary()
        summary["watchdog"] = result
        top = result["max_grad_norm"]
        events = ", ".join(f"{n} {k}" for k, n in sorted(result["events"].items())) or "no events"
        message = (
            f"{result['steps_skipped']} steps skipped, {result['rollbacks']} rollbacks, {events}; "
            f"{result['clipped_fraction']:.0%} of steps clipped"
            + (
                f"; largest gradient norm {top['value']:.3g} at step {top['step']} ({top['group']})"
                if top["step"] is not None
                else ""
            )
        )
        trainer.emit_event(
            "watchdog_summary", message, severity="info", signal=None, value=None, threshold=None, module=None, **result
        )

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "rules": self.rules.state_dict(),
            "events": dict(self.events),
            "steps_skipped": self.steps_skipped,
            "amp_skipped_steps": self.amp_skipped_steps,
            "rollbacks": self.rollbacks,
            "clipped_steps": self.clipped_steps,
            "judged_steps": self.judged_steps,
            "max_grad_norm": dict(self.max_grad_norm),
            "first_warning_step": self.first_warning_step,
            "first_nonfinite_step": self.first_nonfinite_step,
            "last_warned": dict(self.last_warned),
            "good_streak": self.good_streak,
            "trouble_since": self.trouble_since,
            "skip_run": self.skip_run,
            "recent_drops": list(self.recent_drops),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rules.load_state_dict(state["rules"])
        self.events = Counter(state["events"])
        for key in (
            "steps_skipped",
            "amp_skipped_steps",
            "rollbacks",
            "clipped_steps",
            "judged_steps",
            "max_grad_norm",
            "first_warning_step",
            "first_nonfinite_step",
            "last_warned",
            "good_streak",
        ):
            setattr(self, key, state[key])
        self.trouble_since, self.skip_run = state.get("trouble_since"), state.get("skip_run", 0)
        self.recent_drops.extend(state.get("recent_drops", []))


def host_copy(value: Any) -> Any:
    """A deep copy with every tensor in host memory: the snapshots (several, under the default `skip` too)
    must not take device memory from training."""
    if torch.is_tensor(value):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: host_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(host_copy(v) for v in value)
    return copy.deepcopy(value)


def take_snapshot(trainer: TrainerView) -> dict[str, Any]:
    """Model (and its weight average), optimizer and GradScaler state, copied to host memory."""
    ema = trainer.ema
    return {
        "step": trainer.global_step,
        "restored": False,
        "model": host_copy(trainer.model_without_ddp.state_dict()),
        "ema": (host_copy(ema.module.state_dict()), ema.updates) if ema else None,
        "optimizer": host_copy(trainer.optimizer.state_dict()),
        "scaler": copy.deepcopy(trainer.scaler.state_dict()) if trainer.scaler is not None else None,
    }


def restore_snapshot(trainer: TrainerView, snapshot: dict[str, Any]) -> None:
    trainer.model_without_ddp.load_state_dict(snapshot["model"])
    if snapshot["ema"] is not None:
        assert trainer.ema is not None  # the snapshot was taken of this trainer
        trainer.ema.load(*snapshot["ema"])
    # A copy: the optimizer may adopt the loaded tensors as its state and update them in place.
    trainer.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
    if trainer.scaler is not None:
        trainer.scaler.load_state_dict(snapshot["scaler"])
