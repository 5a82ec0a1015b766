"""Fine-tuning from a checkpoint of another class count or query count, resuming a finished run, and the
dataset's categories travelling with checkpoints into `evaluate --per-class`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detr import build_model
from detr.checkpoint import (
    checkpoint_categories,
    load_checkpoint_state_dict,
    load_fitting_state_dict,
)
from detr.config import load_config_file
from detr.engine.checkpointing import check_resume_not_finished
from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detr.errors import CheckpointError, ConfigError
from detrdoctor.cli import app
from detrdoctor.profiles import PROFILE_DIR

SPEC = Path(__file__).parents[2].parent / "shared/spec/detr_r50_state_dict.tsv"
CLASS_HEAD = ["class_embed.weight", "class_embed.bias"]


@pytest.fixture(scope="module")
def seven_class_run(tmp_path_factory) -> Path:
    """A tiny run with num_classes 7 trained for 2 steps: its folder holds checkpoint.pth and config.toml."""
    from detrdoctor.profiles import load_profile

    cfg = load_profile("tiny")
    cfg.train.max_steps = 2
    run = tmp_path_factory.mktemp("seven")
    Trainer(cfg, output_dir=run).fit()
    return run


def test_a_7_class_checkpoint_fine_tunes_onto_18_classes(tiny_cfg, seven_class_run, tmp_path):
    checkpoint = torch.load(seven_class_run / "checkpoint.pth", weights_only=True)
    tiny_cfg.model.num_classes = 18
    tiny_cfg.train.max_steps = 2
    fresh = Trainer(tiny_cfg, output_dir=tmp_path / "fresh").model_without_ddp.state_dict()
    tiny_cfg.train.weights = str(seven_class_run / "checkpoint.pth")
    trainer = Trainer(tiny_cfg, output_dir=tmp_path / "tuned")
    weights = trainer.model_without_ddp.state_dict()

    assert trainer.reinitialised == CLASS_HEAD
    assert weights["class_embed.weight"].shape == (19, 64)
    for key, value in weights.items():  # the class head starts as in a fresh model, every other tensor loaded
        expected = fresh[key] if key in CLASS_HEAD else checkpoint["model"][key]
        assert torch.equal(value, expected), key

    summary = trainer.fit()
    assert summary["steps"] == 2 and summary["exit_code"] == 0
    records = read_metrics(tmp_path / "tuned" / "metrics.jsonl")
    events = [r for r in records if r["type"] == "event" and r["kind"] == "weights_partial"]
    assert len(events) == 1 and events[0]["reinitialised"] == CLASS_HEAD
    assert (
        "class_embed.weight, class_embed.bias: the checkpoint was trained with another num_classes than this "
        "run's 18" in events[0]["message"]
    )
    losses = [r["loss"] for r in records if r["type"] == "step"]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_another_num_queries_reinitialises_exactly_the_queries(tiny_config, tmp_path):
    """An official training checkpoint ({"model", "args": Namespace, ...}) with 10 queries into a model with 20."""
    source, _, _ = build_model(tiny_config)
    path = tmp_path / "official.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(num_queries=10), "epoch": 5}, path)
    tiny_config.num_queries = 20
    torch.manual_seed(3)
    model, _, _ = build_model(tiny_config)
    torch.manual_seed(3)
    fresh, _, _ = build_model(tiny_config)

    assert load_fitting_state_dict(model, load_checkpoint_state_dict(path), str(path), tiny_config) == [
        "query_embed.weight"
    ]
    for key, value in model.state_dict().items():
        expected = fresh.state_dict()[key] if key == "query_embed.weight" else source.state_dict()[key]
        assert torch.equal(value, expected), key


def test_a_fitting_checkpoint_reinitialises_nothing(tiny_config):
    source, _, _ = build_model(tiny_config)
    model, _, _ = build_model(tiny_config)
    assert load_fitting_state_dict(model, source.state_dict(), "same.pth", tiny_config) == []
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_another_backbone_stays_a_one_line_error(tiny_cfg, tmp_path):
    tiny_cfg.model.backbone, tiny_cfg.model.num_classes = "resnet34", 3
    other, _, _ = build_model(tiny_cfg.model)
    torch.save({"model": other.state_dict()}, tmp_path / "resnet34.pth")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--profile",
            "tiny",
            "--weights",
            str(tmp_path / "resnet34.pth"),
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    message = result.output
    assert "does not fit the model" in message and "unexpected keys (backbone.0.body.layer1.2" in message
    # The advice names what fine-tuning cannot adapt (the backbone), not the class count it adapts by itself.
    assert "set backbone=resnet34 in the [model] section" in message and "set num_classes" not in message
    assert not (tmp_path / "run").exists()


def test_a_wider_class_head_is_not_reinitialised(tiny_config):
    """A class head of another width is another model, not another class count: the error stays."""
    tiny_config.hidden_dim, tiny_config.num_classes = 32, 20
    other, _, _ = build_model(tiny_config)
    tiny_config.hidden_dim, tiny_config.num_classes = 64, 7
    model, _, _ = build_model(tiny_config)
    with pytest.raises(CheckpointError) as error:
        load_fitting_state_dict(model, other.state_dict(), "narrow.pth", tiny_config)
    misshaped = sum(v.shape != other.state_dict()[k].shape for k, v in model.state_dict().items())
    assert f"{misshaped} mis-shaped keys" in str(error.value)  # the class head's two among them
    assert "set hidden_dim=32 in the [model] section" in str(error.value)


@pytest.mark.skipif(not SPEC.exists(), reason=f"the official key layout {SPEC} is not there")
def test_the_finetune_profile_takes_the_official_r50_checkpoint():
    from detrdoctor.profiles import load_profile

    cfg = load_profile("finetune")
    assert cfg.train.weights == "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"
    assert (cfg.train.lr, cfg.train.lr_backbone, cfg.model.backbone_weights) == (1e-4, 1e-5, "none")
    assert cfg.train.lr_drop < cfg.train.epochs
    rows = [line.split("\t") for line in SPEC.read_text().splitlines()[1:] if line.strip()]
    official = {k: torch.empty([int(d) for d in shape.split("x")], device="meta") for k, shape, _ in rows}
    cfg.model.num_classes = 18
    with torch.device("meta"):  # shapes only: no weights are allocated
        model, _, _ = build_model(cfg.model)
    assert load_fitting_state_dict(model, official, cfg.train.weights, cfg.model) == CLASS_HEAD


def test_a_url_is_read_from_the_torch_hub_cache_without_network(tiny_config, tmp_path, monkeypatch):
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # nobody listens: a download would fail at once
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    source, _, _ = build_model(tiny_config)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save({"model": source.state_dict()}, tmp_path / "hub" / "checkpoints" / "tiny-detr-0123abcd.pth")
    state_dict = load_checkpoint_state_dict("https://example.invalid/detr/tiny-detr-0123abcd.pth")
    assert all(torch.equal(v, state_dict[k]) for k, v in source.state_dict().items())


def test_resuming_a_finished_run_is_one_line_and_writes_nothing(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs = 1
    Trainer(tiny_cfg, output_dir=tmp_path).fit()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path / "checkpoint.pth")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == (
        f"error: --resume {tmp_path / 'checkpoint.pth'}: the run already finished 1 epoch (--epochs 1); "
        "pass a larger --epochs to continue"
    )
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    # One step more than the first epoch's 8; --weights is not read: the resumed checkpoint has every weight.
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--resume",
            str(tmp_path / "checkpoint.pth"),
            "--epochs",
            "2",
            "--max-steps",
            "9",
            "--weights",
            str(tmp_path / "no-such.pth"),
        ],
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "checkpoint, epochs, max_steps, message",
    [
        ({"model": {}, "epoch": 299}, 300, 0, "finished 300 epochs (--epochs 300)"),  # official: last finished epoch
        ({"model": {}, "epoch": 3, "global_step": 40, "batch_in_epoch": 0}, 3, 0, "finished 3 epochs"),
        ({"model": {}, "epoch": 1, "global_step": 12, "batch_in_epoch": 4}, 5, 12, "made 12 steps (--max-steps 12)"),
    ],
)
def test_resume_past_the_end_names_the_flag(checkpoint, epochs, max_steps, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_resume_not_finished(checkpoint, epochs, max_steps, "ckpt.pth")


def test_resume_within_the_schedule_passes():
    check_resume_not_finished({"model": {}, "epoch": 299}, 301, 0, "ckpt.pth")
    check_resume_not_finished({"model": {}, "epoch": 2, "global_step": 20, "batch_in_epoch": 4}, 3, 21, "ckpt.pth")


def test_categories_travel_in_the_checkpoint_and_config(seven_class_run, tiny_cfg):
    from detr.data import synthetic_categories

    expected = [{"id": c["id"], "name": c["name"]} for c in synthetic_categories()]
    checkpoint = torch.load(seven_class_run / "checkpoint.pth", weights_only=True)
    assert checkpoint["categories"] == expected
    assert checkpoint_categories(checkpoint) == {c["id"]: c["name"] for c in expected}
    assert checkpoint_categories({"model": {}}) == {}  # an official checkpoint: readers fall back
    text = (seven_class_run / "config.toml").read_text()
    assert "\n# 1 = circle\n" in text
    tiny_cfg.train.max_steps = 2
    assert load_config_file(seven_class_run / "config.toml") == tiny_cfg  # the comments change nothing


def test_per_class_ap_is_cocoevals_own_per_category_number(tiny_cfg):
    from pycocotools.cocoeval import COCOeval

    from detr.data import build_dataset
    from detr.engine.evaluate import (
        accumulated_cocoeval,
        coco_box_stats,
        per_class_ap,
        summary_stats,
    )

    coco = build_dataset(tiny_cfg.data, "val", train=False).coco
    rng = np.random.default_rng(0)
    rows = []
    for a in coco.dataset["annotations"]:  # category 1 exact; the others shifted by up to 40% of the box
        shift = 0 if a["category_id"] == 1 else rng.uniform(-0.4, 0.4, 2) * a["bbox"][2:]
        x, y = np.array(a["bbox"][:2]) + shift
        rows.append([a["image_id"], x, y, *a["bbox"][2:], rng.uniform(0.2, 1), a["category_id"]])
    detections, image_ids = np.array(rows, dtype=np.float64), list(coco.getImgIds())
    coco_eval = accumulated_cocoeval(coco, detections, image_ids)
    per_class = {row["id"]: row for row in per_class_ap(coco_eval, {2: "square"})}

    assert per_class[1]["AP"] == pytest.approx(1.0) and per_class[1]["name"] == "1"
    by_hand = COCOeval(coco, coco.loadRes(detections), iouType="bbox")  # category 2 alone, COCOeval's summary
    by_hand.params.imgIds, by_hand.params.catIds = sorted(image_ids), [2]
    by_hand.evaluate(), by_hand.accumulate(), by_hand.summarize()
    assert per_class[2]["name"] == "square" and 0 < per_class[2]["AP"] < 1
    assert per_class[2]["AP"] == pytest.approx(by_hand.stats[0]) and per_class[2]["AP50"] == pytest.approx(
        by_hand.stats[1]
    )
    assert summary_stats(coco_eval) == coco_box_stats(coco, detections, image_ids)


def test_evaluate_per_class_names_the_categories(seven_class_run):
    weights = str(seven_class_run / "checkpoint.pth")
    result = CliRunner().invoke(app, ["evaluate", "--weights", weights, "--per-class", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(c["id"], c["name"]) for c in report["per_class"]][:2] == [(1, "circle"), (2, "square")]
    keys = {"id", "name", "AP", "AP50", "precision", "recall", "f1", "threshold"}
    assert all(set(c) == keys for c in report["per_class"])
    result = CliRunner().invoke(app, ["evaluate", "--weights", weights, "--per-class"])
    assert result.exit_code == 0 and "AP per class" in result.output and "triangle" in result.output


def test_train_fine_tunes_onto_a_dataset_of_other_classes_from_the_command_line(seven_class_run, tiny_cfg, tmp_path):
    """The user's path: `train --coco-path THEIRS --weights CKPT` with a profile holding their class count."""
    import shutil

    from detr.data import dataset_root

    source, root = dataset_root(tiny_cfg.data), tmp_path / "shapes3"
    merge = {1: 1, 4: 1, 2: 2, 3: 2, 6: 2, 5: 3}  # circle, ring: round; square, triangle, diamond: angular
    for split in ("train2017", "val2017"):
        shutil.copytree(source / split, root / split)
        data = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
        for annotation in data["annotations"]:
            annotation["category_id"] = merge[annotation["category_id"]]
        data["categories"] = [{"id": 1, "name": "round"}, {"id": 2, "name": "angular"}, {"id": 3, "name": "cross"}]
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    profile = tmp_path / "tiny4.toml"
    profile.write_text((PROFILE_DIR / "tiny.toml").read_text().replace("num_classes = 7", "num_classes = 4"))

    result = CliRunner().invoke(
        app,
        [
            "train",
            "--profile",
            str(profile),
            "--coco-path",
            str(root),
            "--weights",
            str(seven_class_run / "checkpoint.pth"),
            "--max-steps",
            "2",
            "--output-dir",
            str(tmp_path / "run"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "weights_partial" in result.output and "re-initialised class_embed.weight, class_embed.bias" in result.output
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)
    assert [c["name"] for c in checkpoint["categories"]] == ["round", "angular", "cross"]
