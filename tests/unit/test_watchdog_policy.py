"""The `--on-anomaly` policy on hand-made sequences of host floats: which steps it drops, when it rolls back,
when it stops, and what it writes (no model, no tensors)."""

from __future__ import annotations

import math

from detr.config import WatchdogConfig
from detrdoctor.watchdog.policy import AnomalyPolicy, StepVerdict
from detrdoctor.watchdog.signals import StepStats

GROUPS = ["encoder", "decoder"]


def policy(snapshot_at: int | None = 0, **cfg: object) -> AnomalyPolicy[str]:
    """A policy at the start of a run (step 0), with a snapshot of step `snapshot_at` (None: none) kept."""
    made: AnomalyPolicy[str] = AnomalyPolicy(WatchdogConfig(**cfg), GROUPS)  # type: ignore[arg-type]
    if snapshot_at is not None:
        made.snapshots.add(snapshot_at, f"state of step {snapshot_at}")
    made.start_run(0, clip_max_norm=0.1, overflow_limit=3e38, parameters=10)
    return made


def healthy(step: int) -> StepStats:
    norm = 10.0 + step % 3
    return StepStats(step, 5.0 - 0.01 * step, {"loss_ce": 1.0}, norm, {"encoder": norm / 2, "decoder": norm / 2})


def nan_loss(step: int) -> StepStats:
    return StepStats(step, math.nan, {"loss_ce": math.nan}, math.nan, {"encoder": math.nan, "decoder": math.nan})


def nan_grad(step: int) -> StepStats:
    stats = healthy(step)
    stats.grad_norm, stats.culprit, stats.nonfinite_parameters = math.inf, "transformer.decoder.linear1.weight", 4
    return stats


def kinds(verdict: StepVerdict) -> list[str]:
    return [a.signal.kind for a in verdict.alerts]


def test_healthy_steps_are_left_alone_and_counted():
    p = policy()
    for step in range(1, 31):
        verdict = p.judge(healthy(step))
        assert verdict.alerts == [] and verdict.skip is None and verdict.stop is None
    summary = p.summary(None)
    assert summary["steps_skipped"] == 0 and summary["clipped_fraction"] == 1.0  # every norm > 0.1
    assert summary["max_grad_norm"] == {"value": 12.0, "step": 2, "group": "encoder"}
    assert p.mostly_skipped(30) is None and p.first_warning_step is None


def test_a_nonfinite_loss_is_dropped_even_under_warn():
    p = policy(on_anomaly="warn")
    p.judge(healthy(1))
    verdict = p.judge(nan_loss(2))
    assert kinds(verdict) == ["nonfinite_loss", "step_skipped"] and verdict.skip == "nonfinite_loss"
    error, skipped = verdict.alerts
    assert error.severity == "error" and error.fields == {"nonfinite_parameters": 0, "parameter": None}
    assert skipped.signal.message == "optimizer step 2 dropped: nonfinite_loss" and skipped.severity == "warning"
    assert verdict.stop is None and p.rollback_due is None
    assert p.first_nonfinite_step == p.first_warning_step == 2 and p.steps_skipped == 1


def test_a_nonfinite_gradient_names_its_parameter():
    verdict = policy().judge(nan_grad(3))
    error = verdict.alerts[0]
    assert (error.signal.kind, error.signal.module) == ("nonfinite_grad", "decoder")
    assert error.fields == {"nonfinite_parameters": 4, "parameter": "transformer.decoder.linear1.weight"}
    assert "4 of 10 parameters non-finite" in error.signal.message


def test_gradscaler_skips_are_counted_not_dropped():
    p = policy()
    stats = nan_grad(1)
    stats.amp_skipped = True
    verdict = p.judge(stats)
    assert verdict.skip is None and verdict.alerts == [] and p.amp_skipped_steps == 1 and p.judged_steps == 0


def test_skip_escalates_to_one_rollback_then_stops():
    p = policy(on_anomaly="skip", skip_streak=3)
    for step in (1, 2):
        assert p.judge(nan_loss(step)).stop is None and p.rollback_due is None
    p.judge(nan_loss(3))  # three in a row: the weights are bad
    assert p.rollback_due is not None and p.rollback_due.kind == "skip_escalation"
    target = p.rollback_target()
    alert = p.rolled_back(3, target, [5e-5, 5e-6])
    assert (alert.signal.kind, alert.signal.signal, alert.signal.value, alert.signal.threshold) == (
        "rollback",
        "steps_dropped",
        3.0,
        3.0,
    )
    assert alert.fields == {"restored_step": 0, "lrs": [5e-5, 5e-6]} and target.restored
    assert alert.signal.message.endswith("rollback 1 of at most 1")
    stops = [p.judge(nan_loss(step)).stop for step in (4, 5, 6)]
    assert stops[:2] == [None, None] and stops[2] is not None
    assert stops[2].reason.startswith(
        "watchdog: 3 steps in a row dropped (nonfinite_loss) after a rollback to step 0, skipping cannot save "
        "this run at step 6; the checkpoint holds the last good state (step 0)"
    )
    assert p.restore_due  # the checkpoint gets the last good state


def test_skip_escalates_on_the_share_of_recent_drops():
    p = policy(snapshot_at=None, on_anomaly="skip", skip_streak=100, skip_window=8, skip_share=0.25)
    stops = []
    for step in range(1, 9):
        stops.append(p.judge(nan_loss(step) if step % 2 else healthy(step)).stop)
    assert stops[:4] == [None] * 4 and stops[4] is not None  # 3 of the last 5 > 0.25 × 8
    assert stops[4].reason.startswith("watchdog: 3 of the last 5 steps dropped (nonfinite_loss)")


def test_rollback_restores_until_the_budget_is_spent_then_stops():
    p = policy(on_anomaly="rollback", max_rollbacks=2)
    for step in (1, 2):
        assert p.judge(nan_grad(step)).stop is None and p.rollback_due is not None
        p.rolled_back(step, p.rollback_target(), [1e-4])
    assert p.rollbacks == 2
    verdict = p.judge(nan_grad(3))
    assert verdict.stop is not None and p.rollback_due is None and p.restore_due
    assert verdict.stop.reason.startswith("watchdog: nonfinite_grad after 2 rollbacks at step 3; the checkpoint")


def test_stop_mode_stops_at_the_first_nonfinite_step():
    verdict = policy(snapshot_at=None, on_anomaly="stop").judge(nan_loss(1))
    assert verdict.skip == "nonfinite_loss" and verdict.stop is not None
    assert verdict.stop.reason == "watchdog: nonfinite_loss at step 1" and verdict.stop.signal.kind == "nonfinite_loss"


def test_a_spike_is_dropped_under_skip_and_only_warned_under_warn():
    for mode, dropped in (("skip", "grad_norm_spike"), ("warn", None)):
        p = policy(on_anomaly=mode, warmup_steps=5)
        for step in range(1, 21):
            p.judge(healthy(step))
        spike = healthy(21)
        spike.grad_norm, spike.group_norms = 1e4, {"encoder": 1e4, "decoder": 5.0}
        verdict = p.judge(spike)
        assert kinds(verdict)[0] == "grad_norm_spike" and verdict.skip == dropped
        assert verdict.alerts[0].signal.module == "encoder"


def test_warnings_of_a_kind_wait_out_the_cooldown():
    p = policy(on_anomaly="warn", warmup_steps=3, spike_z=-1e9, cooldown_steps=5)  # every judged step "spikes"
    warned = [step for step in range(1, 16) if "grad_norm_spike" in kinds(p.judge(healthy(step)))]
    assert warned == [4, 10]


def test_the_rollback_target_is_the_newest_snapshot_before_the_trouble():
    p = policy(on_anomaly="rollback", snapshot_every=2)
    for step in range(1, 5):
        p.judge(healthy(step))
        if p.snapshot_due(optimizer_stepped=True):
            p.snapshots.add(step, f"state of step {step}")
    assert [s.step for s in p.snapshots.kept] == [0, 2, 4]
    p.judge(nan_loss(5))
    target = p.rollback_target()
    assert target.step == 4 and target.state == "state of step 4"
    p.rolled_back(5, target, [1e-4])
    p.judge(nan_loss(6))  # failed again since: the restored one gives way to the one before it
    assert p.rollback_target().step == 2 and [s.step for s in p.snapshots.kept] == [0, 2]


def test_a_run_that_mostly_dropped_its_steps_is_an_error():
    p = policy(on_anomaly="warn")
    p.judge(healthy(1))
    for step in range(2, 6):
        p.judge(nan_loss(step))
    alert = p.mostly_skipped(5)
    assert alert is not None and alert.severity == "error"
    assert (alert.signal.signal, alert.signal.value, alert.signal.threshold) == ("steps_dropped", 4, 2.5)
    assert alert.signal.message.startswith("4 of this run's 5 optimizer steps were dropped")


def test_an_earlier_veto_counts_as_a_dropped_step():
    p = policy(snapshot_at=None, on_anomaly="skip", skip_streak=2)
    p.judge(healthy(1), vetoed="data_gate")
    verdict = p.judge(healthy(2), vetoed="data_gate")
    assert verdict.stop is not None and "2 steps in a row dropped (data_gate)" in verdict.stop.reason


def test_policy_state_round_trips():
    p = policy(on_anomaly="skip")
    for step in range(1, 12):
        p.judge(nan_loss(step) if step in (4, 9) else healthy(step))
    p.count_event("step_skipped")
    copy = policy(on_anomaly="skip")
    copy.load_state_dict(p.state_dict())
    assert copy.state_dict() == p.state_dict() and copy.summary(None) == p.summary(None)
