"""The gradient watchdog in the trainer, on the tiny profile: non-finite gradients caught before the optimizer
step and named, rollback, stop with a reproduction bundle, early warning on a divergent run, quiet healthy runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from divergence import PART, ScheduledGrowth

from detr.engine.callbacks import Callback
from detr.engine.checkpointing import load_training_checkpoint
from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.watchdog import ANOMALY_EXIT_CODE, GradientWatchdog
from detrdoctor.watchdog.bundle import load_bundle, replay_bundle
from detrdoctor.watchdog.bundle import main as replay_main

# Divergent runs are deterministic for a seed and a thread count: every test here runs on one thread.
pytestmark = pytest.mark.usefixtures("one_thread")


EVENT_KEYS = {"type", "step", "kind", "severity", "message", "signal", "value", "threshold", "module"}
# The run totals of `summary["watchdog"]` and the `watchdog_summary` event, in this order.
SUMMARY_KEYS = [
    "steps_skipped",
    "amp_skipped_steps",
    "rollbacks",
    "events",
    "max_grad_norm",
    "clipped_fraction",
    "first_warning_step",
    "first_nonfinite_step",
    "update_ratios",
]
# What a checkpoint keeps of the watchdog (under `callbacks.GradientWatchdog`) for `--resume`.
STATE_KEYS = {
    "rules",
    "events",
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
    "trouble_since",
    "skip_run",
    "recent_drops",
}
BUNDLE_KEYS = {
    "format",
    "step",
    "epoch",
    "batch_in_epoch",
    "image_ids",
    "argv",
    "command",
    "config",
    "device",
    "rng",
    "model",
    "batch",
    "observed",
}


@pytest.fixture(scope="module", autouse=True)
def dataset_cache(tmp_path_factory):
    """The synthetic dataset goes to a temporary cache, never the user's, unless the session chose one."""
    if "DETRDOCTOR_CACHE" in os.environ:
        yield
        return
    os.environ["DETRDOCTOR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    del os.environ["DETRDOCTOR_CACHE"]


@pytest.fixture
def tiny_cfg():
    from detrdoctor.profiles import load_profile

    return load_profile("tiny")


def events(run_dir, kind: str | None = None) -> list[dict]:
    found = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "event"]
    return [e for e in found if kind is None or e["kind"] == kind]


def alarms(run_dir) -> list[dict]:
    return [e for e in events(run_dir) if e["severity"] in ("warning", "error")]


def params(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model_without_ddp.named_parameters()}


class InjectNonFinite(Callback):
    """At step `at` (an int or a range), turn the gradient arriving at a module's output into `value`,
    as a real overflow would. Keeps the parameters from before and after the (last) poisoned step."""

    def __init__(self, module: str, value: float, at: int | range):
        self.module, self.value = module, value
        self.steps = at if isinstance(at, range) else range(at, at + 1)
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    def on_step_start(self, trainer, ctx) -> None:
        if ctx.step in self.steps:

            def poison(module, args, output):
                output.register_hook(lambda grad: torch.full_like(grad, self.value))

            self.handle = trainer.model_without_ddp.get_submodule(self.module).register_forward_hook(poison)
            self.before = params(trainer)

    def on_step_end(self, trainer, ctx, record) -> None:
        if ctx.step in self.steps:
            self.handle.remove()
            self.after = params(trainer)


@pytest.mark.parametrize(
    "module, value, detect_anomaly",
    [
        ("transformer.encoder.layers.1.linear2", math.nan, True),
        ("class_embed", math.inf, False),
    ],
)
def test_injected_nonfinite_gradient_is_named_and_never_applied(tiny_cfg, tmp_path, module, value, detect_anomaly):
    tiny_cfg.train.max_steps = 3
    tiny_cfg.watchdog.detect_anomaly = detect_anomaly
    inject = InjectNonFinite(module, value, at=2)
    watchdog = GradientWatchdog(tiny_cfg.watchdog)
    summary = Trainer(tiny_cfg, callbacks=[inject, watchdog], output_dir=tmp_path).fit()

    (error,) = events(tmp_path, "nonfinite_grad")
    assert error["step"] == 2 and error["severity"] == "error"
    assert set(error) == EVENT_KEYS | {"nonfinite_parameters", "parameter"} and error["signal"] == "grad_norm"
    assert error["threshold"] is None and 0 < error["nonfinite_parameters"] <= len(inject.before)
    assert error["parameter"].startswith(module + ".")  # the module itself, not one that merely ran before it
    assert error["module"] == ("encoder" if module.startswith("transformer.encoder") else "class_head")
    assert all(torch.equal(inject.before[n], inject.after[n]) for n in inject.before), "the step reached the weights"
    assert [e["step"] for e in events(tmp_path, "step_skipped")] == [2]
    (skipped,) = events(tmp_path, "step_skipped")  # the dropped step carries the signal that dropped it
    assert set(skipped) == EVENT_KEYS and skipped["severity"] == "warning"
    assert skipped["message"] == "optimizer step 2 dropped: nonfinite_grad"
    assert (skipped["signal"], skipped["module"]) == ("grad_norm", error["module"])
    order = ["nonfinite_grad", "nonfinite_op", "step_skipped"] if detect_anomaly else ["nonfinite_grad", "step_skipped"]
    assert [e["kind"] for e in events(tmp_path) if e["step"] == 2] == order
    assert summary["watchdog"]["steps_skipped"] == 1 and summary["exit_code"] == 0
    assert summary["steps"] == 3
    if detect_anomaly:
        (op,) = events(tmp_path, "nonfinite_op")
        assert op["op"].endswith("Backward0") and "transformer.py" in op["location"]
        assert set(op) == EVENT_KEYS | {"op", "forward_module", "location"} and op["severity"] == "error"
        assert (op["signal"], op["value"], op["module"]) == ("detect_anomaly", None, "encoder")
    for event in events(tmp_path):
        assert EVENT_KEYS <= event.keys() or event["kind"] in ("data_summary", "stopped")
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():  # strict JSON: no NaN or Infinity
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))


def test_gradscaler_skips_are_counted_not_reported_until_their_rate_rises(tiny_cfg, tmp_path):
    # fp16 needs CUDA; a CPU GradScaler on the fp32 loss takes the same path through the watchdog.
    tiny_cfg.train.max_steps = 7
    tiny_cfg.watchdog.window = 4
    tiny_cfg.watchdog.warmup_steps = 2
    inject = InjectNonFinite("class_embed", math.inf, at=range(3, 8))
    watchdog = GradientWatchdog(tiny_cfg.watchdog)
    trainer = Trainer(tiny_cfg, callbacks=[inject, watchdog], output_dir=tmp_path)
    trainer.scaler = trainer.step.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    summary = trainer.fit()

    assert events(tmp_path, "nonfinite_grad") == [] and events(tmp_path, "step_skipped") == []
    assert [e["step"] for e in events(tmp_path, "amp_skip_rate")] == [4]  # 2 of the first 4 steps; then cooldown
    assert summary["watchdog"]["amp_skipped_steps"] == 5 and summary["watchdog"]["steps_skipped"] == 0
    assert all(torch.equal(inject.before[n], inject.after[n]) for n in inject.before)  # GradScaler skipped it
    assert (
        watchdog.latest is not None
        and watchdog.latest.loss_scale == 2.0**16 / 2**4
        and trainer.scaler.get_scale() == 2.0**16 / 2**5
    )


def test_divergent_run_warns_at_least_5_steps_before_the_first_nonfinite_value(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps, tiny_cfg.train.epochs = 14, 10
    growth = ScheduledGrowth(grow_from=2, factor=10.0, nonfinite_at=13)  # non-finite at step 13 by construction
    Trainer(tiny_cfg, callbacks=[GradientWatchdog(tiny_cfg.watchdog), growth], output_dir=tmp_path).fit()
    first_warning = min(e["step"] for e in events(tmp_path) if e["severity"] == "warning")
    nonfinite = [e for e in events(tmp_path) if e["kind"] in ("nonfinite_loss", "nonfinite_grad")]
    assert nonfinite[0]["step"] == 13 and nonfinite[0]["kind"] == "nonfinite_loss"
    assert nonfinite[0]["step"] - first_warning >= 5, (first_warning, nonfinite[0])
    assert any(e["module"] == PART for e in events(tmp_path) if e["step"] == first_warning)


def test_divergent_run_survives_with_skip(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps, tiny_cfg.train.epochs = 12, 10
    tiny_cfg.watchdog.on_anomaly = "skip"
    growth = ScheduledGrowth(grow_from=2, factor=10.0, nonfinite_at=8)
    trainer = Trainer(tiny_cfg, callbacks=[GradientWatchdog(tiny_cfg.watchdog), growth], output_dir=tmp_path)
    summary = trainer.fit()
    assert summary["steps"] == 12 and summary["exit_code"] == 0
    skipped = [e["step"] for e in events(tmp_path, "step_skipped")]
    assert 8 in skipped and summary["watchdog"]["steps_skipped"] == len(skipped)
    assert all(torch.isfinite(p).all() for p in trainer.model_without_ddp.parameters())


def test_rollback_restores_the_snapshot_bit_for_bit_and_lowers_the_lr(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 4
    tiny_cfg.watchdog.on_anomaly = "rollback"
    tiny_cfg.watchdog.snapshot_every = 2

    class Record(Callback):
        """Copies of the model and AdamW state after every step (after the watchdog's own step end)."""

        def __init__(self):
            self.model, self.optim, self.lr = {}, {}, {}

        def on_step_end(self, trainer, ctx, record):
            self.model[ctx.step] = params(trainer)
            self.optim[ctx.step] = {
                i: {k: v.clone() for k, v in s.items()} for i, s in trainer.optimizer.state_dict()["state"].items()
            }
            self.lr[ctx.step] = [g["lr"] for g in trainer.optimizer.param_groups]

    record = Record()
    watchdog = GradientWatchdog(tiny_cfg.watchdog)
    inject = InjectNonFinite("transformer.decoder.layers.0.linear1", math.nan, at=3)
    summary = Trainer(tiny_cfg, callbacks=[inject, watchdog, record], output_dir=tmp_path).fit()

    (rollback,) = events(tmp_path, "rollback")
    assert rollback["step"] == 3 and rollback["restored_step"] == 2
    assert set(rollback) == EVENT_KEYS | {"restored_step", "lrs"} and rollback["severity"] == "warning"
    assert rollback["lrs"] == record.lr[3] and rollback["signal"] == "grad_norm" and rollback["module"] == "decoder"
    assert rollback["message"].startswith("restored the state of step 2 after nonfinite_grad at step 3; learning rates")
    assert rollback["message"].endswith("rollback 1 of at most 3")
    assert [e["kind"] for e in events(tmp_path) if e["step"] == 3] == ["nonfinite_grad", "step_skipped", "rollback"]
    for name, value in record.model[2].items():
        assert torch.equal(record.model[3][name], value), name
    for index, state in record.optim[2].items():
        for key, value in state.items():
            assert torch.equal(record.optim[3][index][key], value), (index, key)
    assert record.lr[3] == [lr * 0.5 for lr in record.lr[2]]
    assert summary["watchdog"]["rollbacks"] == 1 and summary["steps"] == 4
    assert all(torch.isfinite(p).all() for p in record.model[4].values())


def test_stop_writes_a_checkpoint_and_a_bundle_that_reproduces_the_step(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 10
    tiny_cfg.model.dropout = 0.1  # the replay must restore the dropout RNG of the failing step
    tiny_cfg.watchdog.on_anomaly = "stop"
    tiny_cfg.watchdog.warmup_steps = 3
    tiny_cfg.watchdog.spike_z = -1e9  # every judged step is a "spike": stops at step 4
    summary = Trainer(tiny_cfg, callbacks=[GradientWatchdog(tiny_cfg.watchdog)], output_dir=tmp_path).fit()

    assert summary["exit_code"] == ANOMALY_EXIT_CODE and summary["steps"] == 4
    (stopped,) = events(tmp_path, "stopped")
    path = tmp_path / "repro-step4.pth"
    assert stopped["severity"] == "error" and stopped["message"].startswith(
        f"watchdog: grad_norm_spike at step 4; reproduction bundle {path} "
        f"(replay: python -m detrdoctor.watchdog.bundle {path})"
    )
    assert [e["kind"] for e in events(tmp_path) if e["step"] == 4][:3] == ["grad_norm_spike", "step_skipped", "stopped"]
    ckpt = load_training_checkpoint(tmp_path / "checkpoint.pth")
    bundle = load_bundle(tmp_path / "repro-step4.pth")
    assert set(bundle) == BUNDLE_KEYS
    assert set(bundle["observed"]) == {"loss", "loss_dict", "grad_norm", "signal", "module"}
    assert bundle["observed"]["signal"] == "grad_norm_spike"
    assert bundle["step"] == 4 and len(bundle["image_ids"]) == tiny_cfg.train.batch_size
    assert bundle["argv"] and bundle["config"]["train"]["max_steps"] == 10
    for name, value in bundle["model"].items():  # the step was dropped: the checkpoint holds the same weights
        assert torch.equal(ckpt["model"][name], value), name

    replay = replay_bundle(tmp_path / "repro-step4.pth")
    assert replay["loss"] == bundle["observed"]["loss"]
    assert replay["loss_dict"] == bundle["observed"]["loss_dict"]
    assert replay["grad_norm"] == pytest.approx(bundle["observed"]["grad_norm"], rel=1e-5)
    assert replay_main([str(tmp_path / "repro-step4.pth")]) == 0
    # The command the stop message prints.
    replayed = subprocess.run(
        [sys.executable, "-m", "detrdoctor.watchdog.bundle", str(path)], capture_output=True, text=True
    )
    assert replayed.returncode == 0 and replayed.stdout.rstrip().endswith("reproduced"), replayed.stderr


def test_healthy_run_raises_nothing_and_resumes_the_watchdog_state(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs = 10
    tiny_cfg.train.max_steps = 20
    tiny_cfg.watchdog.sample_every = 5  # exercise the attention-logit and update-ratio samples too
    Trainer(tiny_cfg, callbacks=[GradientWatchdog(tiny_cfg.watchdog)], output_dir=tmp_path).fit()
    ckpt = load_training_checkpoint(tmp_path / "checkpoint.pth")
    assert ckpt["callbacks"]["GradientWatchdog"]["rules"]["observed"] == 20
    assert set(ckpt["callbacks"]["GradientWatchdog"]) == STATE_KEYS

    tiny_cfg.train.max_steps = 40
    tiny_cfg.train.resume = str(tmp_path / "checkpoint.pth")
    watchdog = GradientWatchdog(tiny_cfg.watchdog)
    summary = Trainer(tiny_cfg, callbacks=[watchdog]).fit()
    assert alarms(tmp_path) == []
    assert watchdog.policy.rules.observed == 40
    result = summary["watchdog"]
    assert list(result) == SUMMARY_KEYS
    assert result["steps_skipped"] == 0 and result["events"] == {}
    assert set(result["update_ratios"]) >= {"encoder", "decoder", "box_head"}
    assert all(0 < r < 1 for r in result["update_ratios"].values())
    final = events(tmp_path, "watchdog_summary")[-1]  # one per part of the run
    assert final["severity"] == "info" and final["max_grad_norm"]["step"] is not None
    assert set(final) == EVENT_KEYS | set(SUMMARY_KEYS) and set(final["max_grad_norm"]) == {"value", "step", "group"}
    assert final["message"].startswith("0 steps skipped, 0 rollbacks, no events; ")
    json.dumps(final)


@pytest.mark.parametrize("batch_first", [False, True])
def test_attention_logits_match_the_attention_weights(batch_first):
    from detrdoctor.watchdog.readout import attention_logits

    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first)
    query, key = torch.randn(5, 2, 16), torch.randn(7, 2, 16)
    if batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    _, weights = attn(query, key, key, need_weights=True, average_attn_weights=False)  # [B, heads, L, S]
    logits = attention_logits(attn, query, key)  # [B·heads, L, S]
    torch.testing.assert_close(logits.softmax(-1), weights.reshape(8, 5, 7))


def test_train_command_puts_the_watchdog_first_unless_disabled(tiny_cfg):
    from detrdoctor.callbacks import build_callbacks

    assert isinstance(build_callbacks(tiny_cfg)[0], GradientWatchdog)
    tiny_cfg.watchdog.enabled = False
    assert not any(isinstance(cb, GradientWatchdog) for cb in build_callbacks(tiny_cfg))


def test_cli_stop_exits_non_zero_with_profile_thresholds(tmp_path):
    from typer.testing import CliRunner

    from detrdoctor.cli import app
    from detrdoctor.profiles import available_profiles

    profile = tmp_path / "tripwire.toml"
    profile.write_text(available_profiles()["tiny"].read_text() + "\n[watchdog]\nwarmup_steps = 2\nspike_z = -1e9\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--profile",
            str(profile),
            "--on-anomaly",
            "stop",
            "--max-steps",
            "10",
            "--output-dir",
            str(run_dir),
            "--no-dashboard",
        ],
    )
    assert result.exit_code == ANOMALY_EXIT_CODE, result.output
    assert (run_dir / "repro-step3.pth").exists() and (run_dir / "checkpoint.pth").exists()
    assert "stopped" in result.output and "grad_norm_spike" in result.output


def test_rollback_also_restores_the_weight_average(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 5
    tiny_cfg.train.ema_decay = 0.9
    tiny_cfg.watchdog.on_anomaly = "rollback"
    tiny_cfg.watchdog.snapshot_every = 2

    class RecordAverage(Callback):
        def __init__(self):
            self.average = {}

        def on_step_end(self, trainer, ctx, record):
            state = trainer.ema.module.state_dict()
            self.average[ctx.step] = ({k: v.clone() for k, v in state.items()}, trainer.ema.updates)

    record = RecordAverage()
    inject = InjectNonFinite("transformer.decoder.layers.0.linear1", math.nan, at=4)
    Trainer(tiny_cfg, callbacks=[inject, GradientWatchdog(tiny_cfg.watchdog), record], output_dir=tmp_path).fit()

    (rollback,) = events(tmp_path, "rollback")
    assert rollback["step"] == 4 and rollback["restored_step"] == 2
    (at_2, updates_2), (at_3, _), (at_4, updates_4) = (record.average[s] for s in (2, 3, 4))
    assert updates_2 == updates_4 == 2
    assert not torch.equal(at_3["class_embed.weight"], at_2["class_embed.weight"])
    assert all(torch.equal(at_4[k], v) for k, v in at_2.items())
