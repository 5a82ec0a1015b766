"""GradientWatchdog: the training-loop callback that wires the readout, the policy and the snapshots together.

Each step: readout.py reads the step's numbers from the device after the backward pass, policy.py judges
them, and this callback carries the verdict out before the optimizer applies the gradients: it writes the
events, vetoes the optimizer step, re-runs a non-finite step under detect_anomaly, writes the reproduction
bundle of a stop, and at the end of the step rolls back to a snapshot (snapshots.py) or takes a new one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detr.config import WatchdogConfig
from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.checkpointing import rng_state
from detr.engine.metrics import EventRecord, StepRecord
from detr.model import model_part
from detrdoctor.watchdog.bundle import locate_nonfinite, write_bundle
from detrdoctor.watchdog.groups import GROUPS
from detrdoctor.watchdog.policy import ANOMALY_EXIT_CODE, NONFINITE_KINDS, AnomalyPolicy, EventField, Stop
from detrdoctor.watchdog.readout import DeviceReadout, overflow_limit
from detrdoctor.watchdog.signals import Signal, StepStats
from detrdoctor.watchdog.snapshots import TrainingState, restore_snapshot, take_snapshot


class GradientWatchdog(Callback):
    """Early warnings before a NaN, the culprit module when one comes, and `--on-anomaly` to survive it."""

    def __init__(self, cfg: WatchdogConfig):
        self.cfg = cfg
        self.policy: AnomalyPolicy[TrainingState] = AnomalyPolicy(cfg, GROUPS)
        self.readout = DeviceReadout(cfg.sample_every)
        self.latest: StepStats | None = None  # the last step's numbers, for live displays
        self._step_rng: dict[str, Any] | None = None  # the RNG the step's forward draws from, for a re-run

    def on_train_start(self, trainer: TrainerView) -> None:
        self.readout.attach(trainer)
        if self.policy.keeps_snapshots:
            self.policy.snapshots.add(trainer.global_step, take_snapshot(trainer))
        self.policy.start_run(
            trainer.global_step,
            clip_max_norm=trainer.cfg.train.clip_max_norm,
            overflow_limit=overflow_limit(trainer.amp_dtype),
            parameters=len(trainer.grad_param_names),
        )

    def on_step_start(self, trainer: TrainerView, ctx: StepContext) -> None:
        if self.cfg.on_anomaly in ("skip", "rollback", "stop") or self.cfg.detect_anomaly:
            self._step_rng = rng_state()
        self.readout.start_step(trainer.model_without_ddp, ctx.step)

    def after_backward(self, trainer: TrainerView, ctx: StepContext) -> None:
        stats = self.latest = self.readout.read(trainer, ctx)
        verdict = self.policy.judge(stats, vetoed=ctx.skip_reason if ctx.skip_step else None)
        for alert in verdict.alerts:
            self.emit(trainer, alert.signal, alert.severity, **alert.fields)
            if alert.signal.kind in NONFINITE_KINDS and self.cfg.detect_anomaly and self._step_rng is not None:
                self.emit_located(trainer, ctx, alert.signal)
        if verdict.skip is not None:
            ctx.skip_step, ctx.skip_reason = True, verdict.skip
        if verdict.stop is not None:
            self.stop(trainer, ctx, verdict.stop, stats)
        if not ctx.skip_step and self.readout.is_sample_step(ctx.step):
            self.readout.keep_weights(trainer)

    def emit_located(self, trainer: TrainerView, ctx: StepContext, nonfinite: Signal) -> None:
        """Re-run the step under detect_anomaly and report the op and the forward module it names."""
        assert self._step_rng is not None
        found = locate_nonfinite(trainer, ctx, self._step_rng)
        module = model_part(found["module"]) if found.get("module") else nonfinite.module
        self.emit(
            trainer,
            Signal("nonfinite_op", "detect_anomaly", None, None, found["message"], module),
            "error",
            op=found.get("op"),
            forward_module=found.get("module"),
            location=found.get("location"),
        )

    def stop(self, trainer: TrainerView, ctx: StepContext, stop: Stop, stats: StepStats) -> None:
        """End the run after this step, with a reproduction bundle of it (rank 0)."""
        reason = stop.reason
        if trainer.is_main and self._step_rng is not None:
            observed = {
                "loss": stats.loss,
                "loss_dict": stats.components,
                "grad_norm": stats.grad_norm,
                "signal": stop.signal.kind,
                "module": stop.signal.module,
            }
            path = write_bundle(
                Path(trainer.output_dir) / f"repro-step{ctx.step}.pth", trainer, ctx, self._step_rng, observed
            )
            reason += f"; reproduction bundle {path} (replay: python -m detrdoctor.watchdog.bundle {path})"
        trainer.request_stop(reason, ANOMALY_EXIT_CODE)

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        policy = self.policy
        if policy.rollback_due is not None:
            target = policy.rollback_target()
            lrs = restore_snapshot(trainer, target.state, self.cfg.rollback_lr_factor)
            alert = policy.rolled_back(ctx.step, target, lrs)
            self.emit(trainer, alert.signal, alert.severity, **alert.fields)
        if policy.restore_due:  # the run stops: its checkpoint gets the last good state, at a lower lr
            target = policy.rollback_target()
            restore_snapshot(trainer, target.state, self.cfg.rollback_lr_factor)
            policy.restored(target)
        self.readout.end_step(trainer, ctx)
        if policy.snapshot_due(ctx.optimizer_stepped):
            policy.snapshots.add(trainer.global_step, take_snapshot(trainer))

    # ------------------------------------------------------------------ events and summary
    def emit(self, trainer: TrainerView, signal: Signal, severity: str, **fields: EventField) -> None:
        trainer.emit_event(
            signal.kind,
            signal.message,
            severity=severity,
            signal=signal.signal,
            value=signal.value,
            threshold=signal.threshold,
            module=signal.module,
            **fields,
        )

    def on_event(self, trainer: TrainerView, event: EventRecord) -> None:
        self.policy.count_event(event["kind"])

    def summary(self) -> dict[str, Any]:
        return self.policy.summary(self.readout.update_ratios)

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        self.readout.detach()
        if summary["exit_code"] == 0 and (alert := self.policy.mostly_skipped(trainer.global_step)) is not None:
            summary["exit_code"] = ANOMALY_EXIT_CODE
            self.emit(trainer, alert.signal, alert.severity, **alert.fields)
        result = summary["watchdog"] = self.summary()
        trainer.emit_event(
            "watchdog_summary",
            self.policy.summary_message(),
            severity="info",
            signal=None,
            value=None,
            threshold=None,
            module=None,
            **result,
        )

    def state_dict(self) -> dict[str, Any]:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state)
