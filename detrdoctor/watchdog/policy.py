"""`--on-anomaly`: which steps to drop, when to roll back and when to stop, decided on host floats.

Fed one step's StepStats at a time, the policy runs the early-warning rules, keeps the run's totals and
streaks, and answers with a StepVerdict (the events to write, the step to drop, the stop to request) that
callback.py carries out. No tensors here: the decisions are unit-testable on hand-made sequences.

A non-finite loss or gradient never reaches the weights, whatever the mode; `warn` only leaves the
early-warning signals without action. `skip` also drops the step of a gradient-norm or loss spike, and
escalates when dropping stops helping (`skip_streak` steps in a row, or more than `skip_share` of the last
`skip_window`): it rolls back once, then stops. `rollback` restores a snapshot taken before the trouble
began and lowers the learning rates; `stop` ends the run with a checkpoint and a reproduction bundle
(exit status 3). A stop after rollbacks checkpoints the last good state, and a run whose steps were
mostly dropped never ends with exit status 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from detr.config import WatchdogConfig
from detr.model import model_part
from detrdoctor.watchdog.signals import EVENT_KINDS, EarlyWarning, Signal, StepStats

ANOMALY_EXIT_CODE = 3  # `detrdoctor train` exit status after `--on-anomaly stop` (1: error, 2: bad input)
# Warnings of a trend toward overflow: their message ends with what to change.
TREND_KINDS = ("overflow_forecast", "activation_growth", "overflow_risk", "grad_norm_growth")
NONFINITE_KINDS = ("nonfinite_loss", "nonfinite_grad")
EventField = str | int | float | list[float] | None
State = TypeVar("State")  # what a snapshot holds (snapshots.TrainingState in training)


@dataclass
class Alert:
    """An event to write: the signal, its severity, and the fields of its kind."""

    signal: Signal
    severity: str
    fields: dict[str, EventField] = field(default_factory=dict)


@dataclass
class Stop:
    """End the run: `reason` is the stop message (the callback adds the reproduction bundle)."""

    signal: Signal
    reason: str


@dataclass
class StepVerdict:
    """What to do about one step, in order: write the alerts, drop the optimizer step, request the stop."""

    alerts: list[Alert] = field(default_factory=list)
    skip: str | None = None  # drop the optimizer step, for this reason (a signal kind)
    stop: Stop | None = None


@dataclass
class Snapshot(Generic[State]):
    step: int
    state: State
    restored: bool = False  # restored once already: a second rollback reaches further back


class SnapshotLedger(Generic[State]):
    """The `snapshots` newest snapshots, oldest first, and the choice of the one to restore."""

    def __init__(self, size: int):
        self.kept: deque[Snapshot[State]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.kept)

    def add(self, step: int, state: State) -> None:
        self.kept.append(Snapshot(step, state))

    def newest(self) -> Snapshot[State]:
        return self.kept[-1]

    def target(self, onset: int | None) -> Snapshot[State]:
        """The newest snapshot from before `onset` (where the current trouble began); one restored before and
        failed since gives way to the one before it. Snapshots after the target are on the bad path and are
        dropped."""
        limit = onset if onset is not None else math.inf
        while len(self.kept) > 1 and (self.kept[-1].step >= limit or self.kept[-1].restored):
            self.kept.pop()
        return self.kept[-1]


@dataclass
class PeakGradNorm:
    value: float = 0.0
    step: int | None = None
    group: str | None = None  # the module group with the largest gradient norm at that step


def remedy(module: str | None, clip_max_norm: float) -> str:
    """What to change against a growth toward overflow in `module`: its learning rate, or clipping."""
    lr = "--lr-backbone" if module == "backbone" else "--lr"
    clipping = (
        "enable gradient clipping (--clip-max-norm 0.1)"
        if clip_max_norm <= 0
        else f"clip harder (--clip-max-norm < {clip_max_norm:g})"
    )
    return f"; lower the learning rate ({lr}) or {clipping}"


class AnomalyPolicy(Generic[State]):
    """The skip/rollback/stop state machine of one run, and the run's totals (saved in checkpoints)."""

    def __init__(self, cfg: WatchdogConfig, groups: Sequence[str]):
        self.cfg = cfg
        self.rules = EarlyWarning(cfg, list(groups))
        self.snapshots: SnapshotLedger[State] = SnapshotLedger(cfg.snapshots)
        # Run totals, saved in checkpoints.
        self.events: Counter[str] = Counter()
        self.steps_skipped = 0
        self.amp_skipped_steps = 0
        self.rollbacks = 0
        self.clipped_steps = 0
        self.judged_steps = 0
        self.max_grad_norm = PeakGradNorm()
        self.first_warning_step: int | None = None
        self.first_nonfinite_step: int | None = None
        self.last_warned: dict[str, int] = {}
        self.good_streak = 0
        self.trouble_since: int | None = None  # where the current run of warnings and dropped steps began
        self.skip_run = 0  # steps dropped in a row
        self.recent_drops: deque[bool] = deque(maxlen=cfg.skip_window)
        # Decided during a step, carried out at its end (after GradScaler's update).
        self.rollback_due: Signal | None = None
        self.restore_due = False  # a stop after rollbacks: checkpoint the last good state
        # This part of the run, set by start_run.
        self.clip_max_norm = 0.0
        self.overflow_limit = math.inf
        self.parameters = 0
        self._steps_at_start = 0
        self._skipped_at_start = 0

    @property
    def keeps_snapshots(self) -> bool:
        return self.cfg.on_anomaly in ("skip", "rollback")

    def start_run(self, step: int, clip_max_norm: float, overflow_limit: float, parameters: int) -> None:
        """`overflow_limit`: the largest activation the run's dtypes hold; `parameters`: how many are trained."""
        self.clip_max_norm, self.overflow_limit, self.parameters = clip_max_norm, overflow_limit, parameters
        self._steps_at_start, self._skipped_at_start = step, self.steps_skipped

    # ------------------------------------------------------------------ per step
    def judge(self, stats: StepStats, vetoed: str | None = None) -> StepVerdict:
        """The verdict on a step; `vetoed`: why an earlier callback already dropped it (None: it did not)."""
        verdict = StepVerdict()
        if not math.isfinite(stats.loss) or (not math.isfinite(stats.grad_norm) and not stats.amp_skipped):
            self.good_streak = 0
            self._judge_nonfinite(stats, verdict)
        else:
            self._judge_finite(stats, verdict)
        self._count_drop(stats.step, verdict, vetoed)
        return verdict

    def _alert(self, step: int, signal: Signal, severity: str, **fields: EventField) -> Alert:
        if severity != "info" and self.first_warning_step is None:
            self.first_warning_step = step
        return Alert(signal, severity, fields)

    def _judge_finite(self, stats: StepStats, verdict: StepVerdict) -> None:
        """A finite step: run the early-warning rules, act on a spike, keep the run totals."""
        if stats.amp_skipped:
            self.amp_skipped_steps += 1
        else:
            self.judged_steps += 1
            self.clipped_steps += self.clip_max_norm > 0 and stats.grad_norm > self.clip_max_norm
            if stats.grad_norm > self.max_grad_norm.value:
                group = max(stats.group_norms, key=stats.group_norms.__getitem__)
                self.max_grad_norm = PeakGradNorm(stats.grad_norm, stats.step, group)
        signals = self.rules.observe(stats, self.overflow_limit)
        if signals and self.trouble_since is None:
            # A trend was under way for as long as its rule looks back before it could be seen.
            lookback = {
                "overflow_forecast": self.cfg.forecast_steps,
                "activation_growth": self.cfg.growth_steps,
                "grad_norm_growth": self.cfg.growth_steps,
            }
            self.trouble_since = stats.step - max(lookback.get(s.kind, 0) for s in signals)
        for signal in signals:
            if stats.step - self.last_warned.get(signal.kind, -math.inf) > self.cfg.cooldown_steps:
                self.last_warned[signal.kind] = stats.step
                if signal.kind in TREND_KINDS:
                    signal.message += remedy(signal.module, self.clip_max_norm)
                verdict.alerts.append(self._alert(stats.step, signal, "warning"))
        self.good_streak = 0 if signals else self.good_streak + 1
        action = next((s for s in signals if s.actionable), None)
        if action is not None and self.cfg.on_anomaly != "warn":
            self._act(stats.step, action, verdict)

    def _judge_nonfinite(self, stats: StepStats, verdict: StepVerdict) -> None:
        """Name where the NaN/inf came from, and never let it reach the weights, whatever the mode."""
        if self.first_nonfinite_step is None:
            self.first_nonfinite_step = stats.step
        if self.trouble_since is None:
            self.trouble_since = stats.step
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
            parameter = None
        else:
            group = model_part(stats.culprit) if stats.culprit else None
            signal = Signal(
                "nonfinite_grad",
                "grad_norm",
                stats.grad_norm,
                None,
                f"gradient norm is {stats.grad_norm} with a finite loss {stats.loss:.4g}; first "
                f"non-finite gradient in {group} ({stats.culprit}), {stats.nonfinite_parameters} of "
                f"{self.parameters} parameters non-finite",
                group,
            )
            parameter = stats.culprit
        verdict.alerts.append(
            self._alert(
                stats.step, signal, "error", nonfinite_parameters=stats.nonfinite_parameters, parameter=parameter
            )
        )
        self._act(stats.step, signal, verdict)

    def _act(self, step: int, signal: Signal, verdict: StepVerdict) -> None:
        """Drop this optimizer step; with rollback or stop, also restore a snapshot or end the run."""
        verdict.skip = signal.kind
        self.steps_skipped += 1
        dropped = dataclasses.replace(
            signal, kind="step_skipped", message=f"optimizer step {step} dropped: {signal.kind}"
        )
        verdict.alerts.append(self._alert(step, dropped, "warning"))
        mode = self.cfg.on_anomaly
        if mode == "rollback" and self.rollbacks < self.cfg.max_rollbacks and self.snapshots:
            self.rollback_due = signal
        elif mode == "rollback":
            self.restore_due = bool(self.snapshots)
            verdict.stop = self._stop(step, signal, f"{signal.kind} after {self.rollbacks} rollbacks", self.fix())
        elif mode == "stop":
            verdict.stop = self._stop(step, signal, signal.kind)

    def _count_drop(self, step: int, verdict: StepVerdict, vetoed: str | None) -> None:
        """Under `skip`, steps dropped `skip_streak` times in a row, or more than `skip_share` of the recent
        ones, mean the weights themselves are bad: roll back once, and stop if that does not help either."""
        reason = verdict.skip if verdict.skip is not None else vetoed
        dropped = reason is not None
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
        ) + f" ({reason})"
        signal = Signal(
            "skip_escalation",
            "steps_dropped",
            float(self.skip_run if streak else share),
            float(self.cfg.skip_streak if streak else self.cfg.skip_share * self.cfg.skip_window),
            why,
        )
        self.skip_run = 0
        self.recent_drops.clear()
        if self.rollbacks == 0 and self.snapshots:
            self.rollback_due = signal
        else:
            self.restore_due = bool(self.snapshots)
            after = f" after a rollback to step {self.snapshots.newest().step}" if self.rollbacks else ""
            verdict.stop = self._stop(step, signal, f"{why}{after}, skipping cannot save this run", self.fix())

    def _stop(self, step: int, signal: Signal, why: str, fix: str = "") -> Stop:
        return Stop(signal, f"watchdog: {why} at step {step}{fix}")

    def fix(self) -> str:
        """The end of a stop message: what the checkpoint holds, and what to change."""
        if not self.snapshots:
            return "; lower the learning rate (--lr, --lr-backbone) or enable gradient clipping (--clip-max-norm 0.1)"
        return (
            f"; the checkpoint holds the last good state (step {self.rollback_target().step}) with learning "
            f"rates ×{self.cfg.rollback_lr_factor}: resume from it, or restart with a lower learning rate "
            "(--lr, --lr-backbone) or gradient clipping (--clip-max-norm 0.1)"
        )

    # ------------------------------------------------------------------ at the end of a step
    def rollback_target(self) -> Snapshot[State]:
        return self.snapshots.target(self.trouble_since)

    def restored(self, snapshot: Snapshot[State]) -> None:
        """`snapshot` was put back: the restored weights start a new streak and new activation trends."""
        self.restore_due = False
        snapshot.restored = True
        self.good_streak = 0
        for history in self.rules.activation_log.values():
            history.values.clear()

    def rolled_back(self, step: int, snapshot: Snapshot[State], lrs: list[float]) -> Alert:
        """The due rollback to `snapshot` happened at `step`, with learning rates now `lrs`: its event."""
        signal = self.rollback_due
        assert signal is not None, "rolled_back() follows a rollback_due"
        self.rollback_due = None
        self.restored(snapshot)
        self.rollbacks += 1
        limit = self.cfg.max_rollbacks if self.cfg.on_anomaly == "rollback" else 1
        message = (
            f"restored the state of step {snapshot.step} after {signal.kind} at step {step}"
            + (f" ({signal.message})" if signal.kind == "skip_escalation" else "")
            + f"; learning rates ×{self.cfg.rollback_lr_factor} (now {', '.join(f'{lr:.3g}' for lr in lrs)}); "
            f"rollback {self.rollbacks} of at most {limit}"
        )
        rollback = dataclasses.replace(signal, kind="rollback", message=message)
        return self._alert(step, rollback, "warning", restored_step=snapshot.step, lrs=lrs)

    def snapshot_due(self, optimizer_stepped: bool) -> bool:
        """Every `snapshot_every` good steps in a row (under skip and rollback)."""
        return (
            len(self.snapshots) > 0
            and optimizer_stepped
            and self.good_streak > 0
            and self.good_streak % self.cfg.snapshot_every == 0
        )

    # ------------------------------------------------------------------ events and summary
    def count_event(self, kind: str) -> None:
        if kind in EVENT_KINDS:
            self.events[kind] += 1

    def mostly_skipped(self, step: int) -> Alert | None:
        """At the end of a run that would exit 0: an error when most of its optimizer steps were dropped
        (under `warn`, or a run too short to escalate)."""
        steps, skipped = step - self._steps_at_start, self.steps_skipped - self._skipped_at_start
        if skipped <= steps / 2:
            return None
        message = (
            f"{skipped} of this run's {steps} optimizer steps were dropped: the weights did not train" + self.fix()
        )
        return self._alert(step, Signal("mostly_skipped", "steps_dropped", skipped, steps / 2, message), "error")

    def summary(self, update_ratios: dict[str, float] | None) -> dict[str, Any]:
        """The run's totals: `summary["watchdog"]` of `fit()`, and the `watchdog_summary` event.

        first_warning_step is the step of the first warning or error event; clipped_fraction counts the
        steps whose gradient norm exceeded clip_max_norm among those with finite gradients."""
        return {
            "steps_skipped": self.steps_skipped,
            "amp_skipped_steps": self.amp_skipped_steps,
            "rollbacks": self.rollbacks,
            "events": dict(self.events),
            "max_grad_norm": dataclasses.asdict(self.max_grad_norm),
            "clipped_fraction": self.clipped_fraction,
            "first_warning_step": self.first_warning_step,
            "first_nonfinite_step": self.first_nonfinite_step,
            "update_ratios": update_ratios,
        }

    @property
    def clipped_fraction(self) -> float:
        return self.clipped_steps / self.judged_steps if self.judged_steps else 0.0

    def summary_message(self) -> str:
        top = self.max_grad_norm
        events = ", ".join(f"{n} {k}" for k, n in sorted(self.events.items())) or "no events"
        largest = (
            f"; largest gradient norm {top.value:.3g} at step {top.step} ({top.group})" if top.step is not None else ""
        )
        return (
            f"{self.steps_skipped} steps skipped, {self.rollbacks} rollbacks, {events}; "
            f"{self.clipped_fraction:.0%} of steps clipped{largest}"
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
            "max_grad_norm": dataclasses.asdict(self.max_grad_norm),
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
        self.steps_skipped = state["steps_skipped"]
        self.amp_skipped_steps = state["amp_skipped_steps"]
        self.rollbacks = state["rollbacks"]
        self.clipped_steps = state["clipped_steps"]
        self.judged_steps = state["judged_steps"]
        self.max_grad_norm = PeakGradNorm(**state["max_grad_norm"])
        self.first_warning_step = state["first_warning_step"]
        self.first_nonfinite_step = state["first_nonfinite_step"]
        self.last_warned = state["last_warned"]
        self.good_streak = state["good_streak"]
        self.trouble_since, self.skip_run = state.get("trouble_since"), state.get("skip_run", 0)
        self.recent_drops.extend(state.get("recent_drops", []))
