"""`detrdoctor triage`: the rules on hand-made configs and records, and the command on tiny seeded problems."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from detr.config import config_to_toml, load_config_file
from detrdoctor.cli import app
from detrdoctor.profiles import load_profile
from detrdoctor.triage.history import judge_history
from detrdoctor.triage.overfit import judge_overfit
from detrdoctor.triage.schedule import judge_schedule

# The tiny profile made learnable in seconds (the demo's choices at 64 px): it memorises 2 images.
HEALTHY = """
description = "tiny DETR that can memorise a few images in seconds"
[model]
backbone = "resnet18"
backbone_norm = "batch"
train_backbone_stem = true
backbone_stage = 3
hidden_dim = 64
nheads = 4
enc_layers = 1
dec_layers = 2
dim_feedforward = 128
num_queries = 6
dropout = 0.0
num_classes = 7
eos_coef = 0.5
[data]
train_scales = [64]
max_size = 96
val_size = 64
crop_probability = 0.0
num_workers = 0
pin_memory = false
synthetic_train_images = 16
synthetic_val_images = 8
synthetic_image_size = 96
[train]
epochs = 150
lr_drop = 100
batch_size = 2
lr = 5e-4
lr_backbone = 2.5e-4
device = "cpu"
"""
# benchmarks/bench_triage_overfit.py: AP50 1.0 on 2 images from step 70 on (0.5 at 40-60).
STEPS = "90"


def by_id(checks: list[dict]) -> dict[str, dict]:
    return {c["id"]: c for c in checks}


def synthetic_facts(**changes) -> dict:
    return {"train_images": 1920, "objects_per_image": 2.5, "synthetic": True, "world_size": 1, "bf16": None, **changes}


@pytest.fixture
def healthy(tmp_path: Path) -> Path:
    path = tmp_path / "healthy.toml"
    path.write_text(HEALTHY)
    return path


def pixels_of(path: str, colour: tuple[int, int, int]) -> int:
    """How many pixels of the PNG have exactly this colour (the synthetic images never do)."""
    return int((np.asarray(Image.open(path).convert("RGB")) == colour).all(axis=-1).sum())


def triage(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(app, ["triage", "--json", "--device", "cpu", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


# ---------------------------------------------------------------- schedule rules


def test_demo_schedule_has_no_failure() -> None:
    checks = by_id(judge_schedule(load_profile("demo"), synthetic_facts()))
    assert {c["status"] for c in checks.values()} <= {"pass", "warn"}
    assert checks["schedule.steps"]["status"] == "pass"  # 8 epochs × 240 steps
    assert checks["schedule.lr_drop"]["status"] == "pass"  # the drop before the last epoch
    assert checks["schedule.eos_coef"]["status"] == "pass"  # 0.5 for 6 queries


def test_lr_drop_beyond_epochs_fails() -> None:
    cfg = load_profile("demo")
    cfg.train.lr_drop = 200
    check = by_id(judge_schedule(cfg, synthetic_facts()))["schedule.lr_drop"]
    assert check["status"] == "fail" and "never drops" in check["message"]
    cfg.train.lr_drop = 4
    assert by_id(judge_schedule(cfg, synthetic_facts()))["schedule.lr_drop"]["status"] == "pass"


def test_lr_100x_fails_and_sqrt_scaling_is_the_fix() -> None:
    cfg = load_profile("detr-r50")
    cfg.train.lr = 1e-2
    check = by_id(judge_schedule(cfg, synthetic_facts(synthetic=False, world_size=8)))["schedule.lr"]
    assert check["status"] == "fail"
    assert check["fix"] == "--lr 5e-05"  # 1e-4 × √(16 / 64)


def test_from_scratch_on_small_data_points_at_fine_tuning() -> None:
    cfg = load_profile("detr-r50")
    cfg.train.epochs = 20  # 20k steps: 7% of 300k
    check = by_id(judge_schedule(cfg, synthetic_facts(synthetic=False, train_images=2000)))["schedule.steps"]
    assert check["status"] == "fail" and "--weights https://" in check["fix"]
    cfg.train.weights, cfg.train.epochs = "detr-r50.pth", 30  # fine-tuning: 30 epochs are enough
    assert (
        by_id(judge_schedule(cfg, synthetic_facts(synthetic=False, train_images=2000)))["schedule.steps"]["status"]
        == "pass"
    )


def test_eos_coef_too_low_for_few_queries_and_fp16_with_bf16_warn() -> None:
    cfg = load_profile("demo")
    cfg.model.eos_coef, cfg.train.amp = 0.1, "fp16"
    checks = by_id(judge_schedule(cfg, synthetic_facts(bf16=True)))
    assert checks["schedule.eos_coef"]["status"] == "warn"
    assert checks["schedule.amp"]["status"] == "warn" and checks["schedule.amp"]["fix"] == "--amp bf16"
    cfg.train.clip_max_norm = 0.0
    assert by_id(judge_schedule(cfg, synthetic_facts()))["schedule.clip"]["status"] == "warn"


# ---------------------------------------------------------------- overfit and history rules


def overfit_facts(**changes) -> dict:
    records = [
        {
            "type": "step",
            "step": i + 1,
            "loss": 10 - i / 10,
            "loss_ce": 1.5,
            "class_error": 80.0,
            "loss_bbox": 1.0 - i / 100,
            "loss_giou": 1.0 - i / 100,
        }
        for i in range(80)
    ]
    return {
        "images": 4,
        "steps": 80,
        "image_ids": [1, 2, 3, 4],
        "ap50": 0.2,
        "error": "",
        "records": records,
        "events": [],
        **changes,
    }


def test_overfit_names_the_term_that_does_not_learn() -> None:
    checks = by_id(judge_overfit(overfit_facts(), load_profile("demo")))
    assert checks["overfit.fit"]["status"] == "fail"
    assert checks["overfit.labels"]["status"] == "fail"  # loss_ce flat, class_error 80
    assert checks["overfit.boxes"]["status"] == "pass"
    assert checks["overfit.finite"]["status"] == "pass"


def test_overfit_crash_is_a_finding() -> None:
    checks = by_id(judge_overfit(overfit_facts(error="IndexError: Target 9 is out of bounds."), load_profile("demo")))
    assert checks["overfit.fit"]["status"] == "fail" and "Target 9" in checks["overfit.fit"]["message"]


def run_records(ap50: float, loss_end: float, class_error: float = 20.0) -> list[dict]:
    """A 3-epoch run of 40 steps an epoch: the loss falls linearly to loss_end, one eval per epoch."""
    records = []
    for i in range(120):
        loss = 20 + (loss_end - 20) * i / 119
        records.append(
            {
                "type": "step",
                "step": i + 1,
                "epoch": i // 40,
                "loss": loss,
                "loss_ce": loss / 10,
                "class_error": class_error,
                "lr": 1e-4,
                "step_time_s": 0.5,
                "data_time_s": 0.01,
            }
        )
        if (i + 1) % 40 == 0:
            records.append({"type": "eval", "step": i + 1, "AP": ap50 / 2, "AP50": ap50})
    return records


def test_ap_zero_while_the_loss_falls_fails() -> None:
    checks = by_id(judge_history(run_records(ap50=0.0, loss_end=5.0), lr_drop=200, epochs=300, needed=(1000, "test")))
    assert checks["run.eval_vs_loss"]["status"] == "fail"
    assert checks["run.plateau"]["status"] == "pass"
    assert checks["run.data_wait"]["status"] == "pass"
    assert checks["run.steps"]["status"] == "warn"  # 120 of 1000
    healthy = by_id(judge_history(run_records(ap50=0.4, loss_end=5.0), lr_drop=200, epochs=300, needed=None))
    assert healthy["run.eval_vs_loss"]["status"] == "pass"


def test_class_error_stuck_and_lr_that_never_dropped() -> None:
    checks = by_id(
        judge_history(run_records(ap50=0.0, loss_end=19.0, class_error=99.0), lr_drop=2, epochs=3, needed=None)
    )
    assert checks["run.class_error"]["status"] == "fail"
    assert checks["run.lr"]["status"] == "fail"  # past epoch 2 and still at 1e-4
    assert checks["run.plateau"]["status"] == "warn"


# ---------------------------------------------------------------- seeded data problems


def seeded_dataset(tmp_path: Path, mutate) -> Path:
    """A tiny synthetic COCO dataset on disk whose annotation files went through `mutate(data)`."""
    from detr.data import generate_synthetic_coco

    root = generate_synthetic_coco(tmp_path / "data", train_images=16, val_images=8, image_size=96, seed=0)
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        data = json.loads(path.read_text())
        mutate(data)
        path.write_text(json.dumps(data))
    return root


def as_xyxy(data: dict) -> None:
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        a["bbox"] = [x, y, x + w, y + h]


def shift_ids(by: int):
    def mutate(data: dict) -> None:
        for c in data["categories"]:
            c["id"] += by
        for a in data["annotations"]:
            a["category_id"] += by

    return mutate


@pytest.mark.parametrize(
    ("mutate", "failing"),
    [
        (as_xyxy, "data.box_format"),  # boxes stored as [x1, y1, x2, y2]
        (shift_ids(1), "data.num_classes"),  # 1..6 → 2..7: id 7 is num_classes 7, the no-object class
        (shift_ids(3), "data.num_classes"),  # ids above num_classes
    ],
)
def test_seeded_data_problem_fails_its_check(healthy: Path, tmp_path: Path, mutate, failing: str) -> None:
    from detrdoctor.commands.triage import data_checks

    cfg = load_config_file(healthy)
    cfg.data.coco_path = str(seeded_dataset(tmp_path, mutate))
    checks = by_id(data_checks(cfg))
    assert checks[failing]["status"] == "fail" and checks[failing]["fix"]
    assert all(c["section"] == "data" for c in checks.values())
    cfg.data.coco_path = str(seeded_dataset(tmp_path / "clean", lambda data: None))
    assert not [c["id"] for c in data_checks(cfg) if c["status"] == "fail"]


def test_xyxy_boxes_are_learned_but_not_scored(healthy: Path, tmp_path: Path) -> None:
    # Without the data rows too: the model fits the clamped boxes, COCOeval scores the ones written.
    root = seeded_dataset(tmp_path, as_xyxy)
    code, report = triage(
        "--profile",
        str(healthy),
        "--coco-path",
        str(root),
        "--images",
        "2",
        "--steps",
        STEPS,
        "--out",
        str(tmp_path / "o"),
    )
    checks = by_id(report["checks"])
    assert code == 1 and checks["data.box_format"]["status"] == "fail"
    assert report["overfit"]["ap50"] < 0.9
    assert checks["overfit.boxes"]["status"] == "fail" and "clamped" in checks["overfit.boxes"]["message"]
    assert checks["overfit.labels"]["status"] == "pass"


def test_ids_above_num_classes_stop_the_overfit_as_a_finding(healthy: Path, tmp_path: Path) -> None:
    root = seeded_dataset(tmp_path, shift_ids(3))
    code, report = triage(
        "--profile",
        str(healthy),
        "--coco-path",
        str(root),
        "--images",
        "2",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "o"),
    )
    checks = by_id(report["checks"])
    assert code == 1
    assert checks["data.num_classes"]["status"] == "fail"
    assert checks["overfit.fit"]["status"] == "fail" and "num_classes" in checks["overfit.fit"]["message"]
    assert len(report["artifacts"]["images"]) == 2  # the training samples are still drawn


# ---------------------------------------------------------------- the command


def test_healthy_tiny_run_passes_and_draws(healthy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, report = triage("--profile", str(healthy), "--images", "2", "--steps", STEPS, "--out", str(out))
    failing = [c["id"] for c in report["checks"] if c["status"] == "fail"]
    assert code == 0 and not failing, failing
    assert report["overfit"]["ap50"] >= 0.9
    assert report["overfit"]["loss_end"] < report["overfit"]["loss_start"]
    assert set(report["overfit"]["terms"]) >= {"loss_ce", "loss_bbox", "loss_giou"}
    assert report["summary"]["fail"] == 0 and report["summary"]["verdict"]
    images = report["artifacts"]["images"]
    assert report["artifacts"]["folder"] == str(out) and len(images) == 4  # 2 training samples, 2 predictions
    for path in images:
        assert pixels_of(path, (0, 255, 0)) > 100, path  # the target boxes are drawn
    predicted = [p for p in images if p.endswith("-overfit.png")]
    assert predicted and all(pixels_of(p, (255, 0, 0)) > 100 for p in predicted)  # and the predictions


def test_lr_100x_overfit_fails_with_the_watchdogs_event(tmp_path: Path) -> None:
    # The tiny profile as is (frozen normalisation) at 100× its lr: activations run away within 10 steps.
    # (AdamW with normalisation layers collapses rather than producing NaN on the CPU in float32.)
    cfg = load_profile("tiny")
    cfg.train.lr *= 100
    cfg.train.lr_backbone *= 100
    profile = tmp_path / "hot.toml"
    profile.write_text(config_to_toml(cfg))
    code, report = triage("--profile", str(profile), "--images", "2", "--steps", "30", "--out", str(tmp_path / "o"))
    checks = by_id(report["checks"])
    assert code == 1
    assert checks["schedule.lr"]["status"] == "fail"
    assert checks["overfit.fit"]["status"] == "fail"
    assert checks["overfit.finite"]["status"] == "fail" and "watchdog's" in checks["overfit.finite"]["message"]


def test_run_folder_whose_ap_stays_zero(healthy: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(config_to_toml(load_config_file(healthy)))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run_records(ap50=0.0, loss_end=5.0)))
    code, report = triage("--run", str(run), "--steps", "0", "--images", "1", "--out", str(tmp_path / "o"))
    checks = by_id(report["checks"])
    assert code == 1 and checks["run.eval_vs_loss"]["status"] == "fail"
    assert checks["overfit.fit"]["status"] == "skip" and report["overfit"] is None
    assert len(report["artifacts"]["images"]) == 1


def test_layout_flags_reach_every_section(healthy: Path, tmp_path: Path) -> None:
    root = seeded_dataset(tmp_path, lambda data: None)
    (root / "annotations" / "instances_train2017.json").rename(root / "mine.json")
    code, report = triage(
        "--profile",
        str(healthy),
        "--coco-path",
        str(root),
        "--train-annotations",
        "mine.json",
        "--steps",
        "0",
        "--images",
        "1",
        "--out",
        str(tmp_path / "o"),
    )
    checks = by_id(report["checks"])
    assert checks["data.num_classes"]["status"] == "pass"
    assert checks["schedule.steps"]["status"] == "fail"  # real data from scratch: 16 images, 1,200 steps
    assert len(report["artifacts"]["images"]) == 1 and code == 1


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["triage", "--images", "0"])
    assert result.exit_code == 2 and "--images" in result.output
    result = CliRunner().invoke(app, ["triage", "--run", str(tmp_path)])
    assert result.exit_code == 2 and "metrics.jsonl" in result.output
