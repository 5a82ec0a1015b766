"""The trainer on the tiny profile: learning, exact resume, atomic checkpoints, evaluation, bad input."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from detr.engine.checkpointing import save_atomic
from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.cli import app


def step_losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "step"}


def test_loss_goes_down_over_30_steps(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 30
    tiny_cfg.train.epochs = 100
    summary = Trainer(tiny_cfg, output_dir=tmp_path).fit()
    losses = list(step_losses(tmp_path).values())
    assert summary["steps"] == 30 and len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-10:]) / 10
    assert last < 0.9 * first, (first, last)
    assert (tmp_path / "checkpoint.pth").exists() and (tmp_path / "config.toml").exists()


def test_step_records_have_the_documented_fields(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 2
    Trainer(tiny_cfg, output_dir=tmp_path).fit()
    record = next(r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "step")
    for key in (
        "step",
        "epoch",
        "loss",
        "loss_ce",
        "loss_bbox",
        "loss_giou",
        "class_error",
        "cardinality_error",
        "lr",
        "grad_norm",
        "clip_ratio",
        "step_time_s",
        "data_time_s",
        "images_per_s",
    ):
        assert key in record, key
    clip = tiny_cfg.train.clip_max_norm
    assert record["clip_ratio"] == pytest.approx(min(1.0, clip / record["grad_norm"]), rel=1e-4)
    assert "loss_scale" not in record  # fp16 only


def test_the_dashboard_shows_the_clip_ratio_of_real_records(tiny_cfg, tmp_path):
    from detrdoctor.dashboard.live import run_info
    from detrdoctor.dashboard.render import gradients_panel
    from detrdoctor.dashboard.state import DashboardState

    tiny_cfg.train.max_steps = 2
    trainer = Trainer(tiny_cfg, output_dir=tmp_path)
    trainer.fit()
    record = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "step"][-1]
    state = DashboardState()
    state.start(run_info(trainer, "tiny"))
    state.add_record(record)
    assert state.snapshot().clip_ratio == pytest.approx(record["clip_ratio"])
    text = " ".join(line.plain for line in gradients_panel(state.snapshot(), 80))
    assert f"×{record['clip_ratio']:.2g}" in text
    state.add_record({**record, "loss_scale": 65536.0})  # what an fp16 step record carries on a GPU
    assert "scale 65536" in " ".join(line.plain for line in gradients_panel(state.snapshot(), 80))


def test_total_steps_is_one_number_for_every_display(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 1000  # more than epochs × batches: the epochs end the run first
    trainer = Trainer(tiny_cfg, output_dir=tmp_path)
    batches = trainer.train_loader.batch_sampler.batches_per_epoch
    assert trainer.total_steps() == tiny_cfg.train.epochs * batches
    assert trainer.fit()["steps"] == trainer.total_steps()


def test_diagnostics_settings_round_trip_through_config_toml_and_resume(tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text(tiny_profile_text() + '\n[diagnostics]\nstall_after = 45.0\non_stall = "stop"\n')
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--profile", str(profile), "--max-steps", "2", "--output-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert 'on_stall = "stop"' in (run / "config.toml").read_text()
    from detrdoctor.commands.train import TrainOptions, resolve_train_config

    resumed = resolve_train_config(TrainOptions(resume=str(run / "checkpoint.pth")))
    assert (resumed.diagnostics.stall_after, resumed.diagnostics.on_stall) == (45.0, "stop")
    assert resumed.model.hidden_dim == 64  # the run's own (tiny) model, not the default demo profile's
    overridden = resolve_train_config(TrainOptions(resume=str(run / "checkpoint.pth"), on_stall="wait"))
    assert overridden.diagnostics.on_stall == "wait"  # flags still override


def tiny_profile_text() -> str:
    from detrdoctor.profiles import resolve_profile

    return resolve_profile("tiny").read_text()


def test_channels_last_changes_the_layout_not_the_losses(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 3
    Trainer(tiny_cfg, output_dir=tmp_path / "contiguous").fit()
    tiny_cfg.train.channels_last = True
    trainer = Trainer(tiny_cfg, output_dir=tmp_path / "nhwc")
    assert trainer.model.backbone[0].body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    trainer.fit()
    contiguous, nhwc = step_losses(tmp_path / "contiguous"), step_losses(tmp_path / "nhwc")
    assert nhwc.keys() == contiguous.keys() == {1, 2, 3}
    assert nhwc == pytest.approx(contiguous, rel=1e-3)


def test_resume_mid_epoch_reproduces_every_later_loss(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs = 3
    tiny_cfg.model.dropout = 0.1  # resume must also restore the dropout RNG
    full = tmp_path / "full"
    tiny_cfg.train.max_steps = 13  # 8 batches per epoch: crosses an epoch boundary after the resume
    Trainer(tiny_cfg, output_dir=full).fit()

    part = tmp_path / "part"
    tiny_cfg.train.max_steps = 5  # stops in the middle of epoch 0
    Trainer(tiny_cfg, output_dir=part).fit()
    tiny_cfg.train.max_steps = 13
    tiny_cfg.train.resume = str(part / "checkpoint.pth")
    Trainer(tiny_cfg).fit()

    expected, resumed = step_losses(full), step_losses(part)
    assert sorted(resumed) == list(range(1, 14))
    assert [resumed[s] for s in range(6, 14)] == [expected[s] for s in range(6, 14)]


def test_a_killed_checkpoint_write_leaves_the_previous_file_loadable(tmp_path):
    path = tmp_path / "checkpoint.pth"
    save_atomic({"model": {"w": torch.zeros(4)}, "epoch": 0}, path)
    writer = textwrap.dedent(f"""
        import torch
        from detr.engine.checkpointing import save_atomic
        big = {{"w": torch.ones(8_000_000)}}
        for epoch in range(1, 1000):
            save_atomic({{"model": big, "epoch": epoch}}, {str(path)!r})
            print(epoch, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    while int(proc.stdout.readline()) < 2:
        pass  # the kill below then lands while a later write is in progress
    proc.kill()
    proc.wait()
    assert torch.load(path, weights_only=True)["epoch"] >= 2


def test_evaluate_scores_perfect_predictions_at_ap_one(tiny_cfg):
    import numpy as np

    from detr.data import build_dataset
    from detr.engine.evaluate import coco_box_stats

    dataset = build_dataset(tiny_cfg.data, "val", train=False)
    coco = dataset.coco
    rows = [[a["image_id"], *a["bbox"], 1.0, a["category_id"]] for a in coco.dataset["annotations"]]
    stats = coco_box_stats(coco, np.array(rows, dtype=np.float64), list(coco.getImgIds()))
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)


def test_evaluate_command_on_a_trained_checkpoint(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 2
    Trainer(tiny_cfg, output_dir=tmp_path).fit()
    result = CliRunner().invoke(app, ["evaluate", "--weights", str(tmp_path / "checkpoint.pth"), "--json"])
    assert result.exit_code == 0, result.output
    import json

    stats = json.loads(result.output)
    assert set(stats) >= {"AP", "AP50", "AP75", "images"} and 0.0 <= stats["AP"] <= 1.0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "batch size"),
        (["--lr", "-1"], "learning rate"),
        (["--amp", "fp16", "--device", "cpu"], "fp16"),
        (["--profile", "no-such-profile"], "unknown profile"),
        (["--amp", "fp8"], "amp"),
        (["--ema-decay", "1"], "--ema-decay"),
        (["--on-stall", "later"], "--on-stall"),
        (["--stall-after", "-5"], "--stall-after"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args, message):
    result = CliRunner().invoke(
        app, ["train", "--profile", "tiny", *args] if "--profile" not in args else ["train", *args]
    )
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_profile_with_unknown_key_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nbatch_sise = 4\n")
    result = CliRunner().invoke(app, ["train", "--profile", str(bad)])
    assert result.exit_code == 2 and "batch_sise" in result.output


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[model]\nbackbone_stage = 5\n", "backbone_stage"),
        ('[model]\nbackbone_norm = "group"\n', "backbone_norm"),
        ('[model]\nbackbone_norm = "batch"\n[train]\nlr_backbone = 0.0\n', "lr_backbone > 0"),
        ('[model]\nbackbone = "resnet50"\ndilation = true\nbackbone_stage = 3\n', "dilation"),
        ("[data]\ncrop_probability = 1.5\n", "crop_probability"),
    ],
)
def test_impossible_profile_values_exit_2(tmp_path, toml, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(toml)
    result = CliRunner().invoke(app, ["train", "--profile", str(bad)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_profiles_command_lists_every_preset():
    result = CliRunner().invoke(app, ["profiles", "--json"])
    import json

    names = {p["name"] for p in json.loads(result.output)}
    assert {"detr-r50", "detr-r50-fast", "detr-r101", "detr-r50-dc5", "demo", "tiny", "finetune"} <= names


def test_imagenet_backbone_weights_without_network_fail_in_one_line(tmp_path, monkeypatch):
    # A proxy nobody listens on: the download is refused at once, as on a machine without network.
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    result = CliRunner().invoke(
        app, ["train", "--profile", "tiny", "--backbone-weights", "imagenet", "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "ImageNet resnet18 weights" in result.output and "--backbone-weights none" in result.output
    assert not (tmp_path / "run").exists()
