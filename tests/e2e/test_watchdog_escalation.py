"""Divergence on the tiny profile, built deterministically (tests/divergence.py): announced at least 5 steps before
the first non-finite loss, `skip` escalating to a rollback and then a stop instead of finishing a dead run with
exit 0, and `rollback` landing before the growth began."""

from __future__ import annotations

import math

import pytest
import torch
from divergence import PART, ScheduledGrowth

from detr.engine.callbacks import Callback
from detr.engine.checkpointing import load_training_checkpoint
from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.watchdog import ANOMALY_EXIT_CODE, GradientWatchdog


def events(run_dir, kind: str | None = None) -> list[dict]:
    found = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "event"]
    return [e for e in found if kind is None or e["kind"] == kind]


NONFINITE = ("nonfinite_loss", "nonfinite_grad")


def run(cfg, tmp_path, steps: int, on_anomaly: str, growth: ScheduledGrowth, attention: str = "fused") -> dict:
    cfg.train.epochs, cfg.train.max_steps, cfg.train.clip_max_norm = 100, steps, 0.0
    cfg.model.attention, cfg.watchdog.on_anomaly = attention, on_anomaly
    trainer = Trainer(cfg, callbacks=[GradientWatchdog(cfg.watchdog), growth], output_dir=tmp_path)
    return trainer.fit()


# ×100 per step reaches float32's range in ~19 steps: the forecast can speak after `forecast_steps` of growth,
# long before the (constructed) non-finite loss at step 14. Both attention paths: the lead is the watchdog's.
@pytest.mark.parametrize("attention", ["fused", "reference"])
def test_fast_divergence_is_announced_at_least_5_steps_ahead(tiny_cfg, tmp_path, attention):
    run(tiny_cfg, tmp_path, 15, "warn", ScheduledGrowth(grow_from=2, factor=10.0, nonfinite_at=14), attention)
    first_warning = min(e["step"] for e in events(tmp_path) if e["severity"] == "warning")
    first_nonfinite = min(e["step"] for e in events(tmp_path) if e["kind"] in NONFINITE)
    assert first_nonfinite == 14 and first_nonfinite - first_warning >= 5, (first_warning, first_nonfinite)
    forecast = events(tmp_path, "overflow_forecast")[0]
    assert forecast["step"] <= first_nonfinite - 5 and forecast["module"] == PART
    assert "per step: non-finite in ~" in forecast["message"]


def test_healthy_run_at_another_seed_stays_silent(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs, tiny_cfg.train.max_steps, tiny_cfg.train.seed = 100, 40, 0
    summary = Trainer(tiny_cfg, callbacks=[GradientWatchdog(tiny_cfg.watchdog)], output_dir=tmp_path).fit()
    assert [e for e in events(tmp_path) if e["severity"] != "info"] == [] and summary["exit_code"] == 0


class InitialWeights(Callback):
    def on_train_start(self, trainer) -> None:
        self.weights = {k: v.clone() for k, v in trainer.model_without_ddp.state_dict().items()}


def test_skip_escalates_to_a_rollback_then_stops_with_the_last_good_state(tiny_cfg, tmp_path):
    lr_backbone = tiny_cfg.train.lr_backbone
    initial = InitialWeights()
    tiny_cfg.train.epochs, tiny_cfg.train.max_steps, tiny_cfg.train.clip_max_norm = 100, 60, 0.0
    tiny_cfg.watchdog.on_anomaly = "skip"
    always = ScheduledGrowth(grow_from=10**9, factor=1.0, nonfinite_at=range(2, 10**9))  # and again after the rollback
    callbacks = [initial, GradientWatchdog(tiny_cfg.watchdog), always]
    summary = Trainer(tiny_cfg, callbacks=callbacks, output_dir=tmp_path).fit()

    assert summary["exit_code"] == ANOMALY_EXIT_CODE and summary["steps"] < 60
    (rollback,) = events(tmp_path, "rollback")
    assert rollback["restored_step"] == 0 and "3 steps in a row dropped" in rollback["message"]
    assert (rollback["signal"], rollback["value"], rollback["threshold"]) == ("steps_dropped", 3.0, 3.0)
    assert rollback["step"] == 4 and [e["step"] for e in events(tmp_path, "step_skipped")][:3] == [2, 3, 4]
    (stopped,) = events(tmp_path, "stopped")
    assert stopped["severity"] == "error" and stopped["step"] == summary["steps"]
    assert stopped["message"].startswith(
        "watchdog: 3 steps in a row dropped (nonfinite_loss) after a rollback to "
        f"step 0, skipping cannot save this run at step {summary['steps']}; the"
    )
    assert "--clip-max-norm 0.1" in stopped["message"]
    ckpt = load_training_checkpoint(tmp_path / "checkpoint.pth")
    assert all(torch.equal(ckpt["model"][k], v) for k, v in initial.weights.items())  # the state of step 0
    assert ckpt["optimizer"]["param_groups"][1]["lr"] == pytest.approx(lr_backbone * 0.5 * 0.5)


def test_a_run_that_mostly_dropped_its_steps_never_exits_0(tiny_cfg, tmp_path):
    # `warn` never escalates: steps 2–12 are dropped
    summary = run(tiny_cfg, tmp_path, 12, "warn", ScheduledGrowth(10**9, 1.0, nonfinite_at=range(2, 13)))
    assert summary["exit_code"] == ANOMALY_EXIT_CODE
    (error,) = events(tmp_path, "mostly_skipped")
    assert error["severity"] == "error" and error["message"].startswith("11 of this run's 12 optimizer steps")
    assert (error["signal"], error["value"], error["threshold"], error["step"]) == ("steps_dropped", 11, 6.0, 12)


def test_rollback_lands_before_the_growth_began_and_the_run_recovers(tiny_cfg, tmp_path):
    # Snapshots every 5 good steps: the one of step 5 is on the diverging path already (the growth starts at step 2).
    tiny_cfg.watchdog.snapshot_every = 5
    growth = ScheduledGrowth(grow_from=2, factor=10.0, nonfinite_at=7, grow_until=7)
    summary = run(tiny_cfg, tmp_path, 30, "rollback", growth)

    (rollback,) = events(tmp_path, "rollback")
    assert rollback["step"] == 7 and rollback["restored_step"] == 0
    assert summary["exit_code"] == 0 and summary["steps"] == 30
    assert [e["step"] for e in events(tmp_path) if e["kind"] in NONFINITE] == [7]
    losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "step" and r["step"] > 7]
    assert len(losses) == 23 and all(math.isfinite(loss) for loss in losses)
