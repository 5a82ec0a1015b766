"""`detrdoctor predict`: drawn images, COCO results that score exactly like `evaluate`, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from typer.testing import CliRunner

from detr.data import build_dataset
from detr.engine.trainer import Trainer
from detrdoctor.cli import app
from detrdoctor.profiles import load_profile

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny checkpoint trained for two steps on the synthetic dataset."""
    cfg = load_profile("tiny")
    cfg.train.max_steps = 2
    folder = tmp_path_factory.mktemp("run")
    Trainer(cfg, output_dir=folder).fit()
    return str(folder / "checkpoint.pth")


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def coco_ap(coco, results_file: Path) -> float:
    """COCO box AP of a results file, scored the way a user would: loadRes, COCOeval, summarize."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(coco, coco.loadRes(str(results_file)), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return float(coco_eval.stats[0])


def self_labelled_split(root: Path, images: Path, coco, predictions: list[dict]) -> None:
    """A val split of the same images whose ground truth is the model's three best boxes per image.

    A two-step model scores AP 0 on the real labels; here it scores well, so equal APs mean something.
    """
    best: dict[int, list[dict]] = {}
    for p in sorted(predictions, key=lambda p: -p["score"]):
        best.setdefault(p["image_id"], []).append(p)
    annotations = [
        {
            "id": n + 1,
            "image_id": p["image_id"],
            "category_id": p["category_id"],
            "bbox": p["bbox"],
            "area": p["bbox"][2] * p["bbox"][3],
            "iscrowd": 0,
        }
        for n, p in enumerate(p for kept in best.values() for p in kept[:3])
    ]
    (root / "annotations").mkdir(parents=True)
    os.symlink(images, root / "val2017")
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps(
            {"images": list(coco.imgs.values()), "annotations": annotations, "categories": list(coco.cats.values())}
        )
    )


def test_predict_on_the_val_split_draws_every_image_and_scores_like_evaluate(weights, tmp_path):
    out = tmp_path / "drawn"
    summary = invoke("predict", "--weights", weights, "--split", "val", "--out", str(out), "--threshold", "0")
    dataset = build_dataset(load_profile("tiny").data, "val", train=False)
    assert summary["images"] == len(dataset) == 8 and summary["unreadable"] == 0
    assert summary["detections"] == summary["boxes_drawn"] == 8 * 10  # 10 queries, all drawn at threshold 0

    results = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in results} == set(dataset.ids)
    for image_id in dataset.ids:
        name = dataset.coco.imgs[image_id]["file_name"]
        original = np.asarray(Image.open(dataset.image_dir / name).convert("RGB"))
        drawn = np.asarray(Image.open(out / name).convert("RGB"))
        factor = drawn.shape[0] // original.shape[0]  # small images are enlarged by a whole factor for the labels
        assert drawn.shape == (original.shape[0] * factor, original.shape[1] * factor, 3)
        enlarged = original.repeat(factor, axis=0).repeat(factor, axis=1).astype(int)
        top = max((r for r in results if r["image_id"] == image_id), key=lambda r: r["score"])
        x, y, w, h = (round(v * factor) for v in top["bbox"])
        x0, y0 = max(x, 0), max(y, 0)
        inside = np.abs(drawn[y0 : y + h, x0 : x + w].astype(int) - enlarged[y0 : y + h, x0 : x + w])
        assert inside.size and inside.max() > 60, "nothing drawn inside the best box"

    result = runner.invoke(app, ["evaluate", "--weights", weights, "--json"])
    assert result.exit_code == 0, result.output
    assert coco_ap(dataset.coco, out / "predictions.json") == json.loads(result.stdout)["AP"]

    root = tmp_path / "labelled"
    self_labelled_split(root, dataset.image_dir, dataset.coco, results)
    result = runner.invoke(app, ["evaluate", "--weights", weights, "--coco-path", str(root), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)["AP"]
    invoke("predict", "--weights", weights, "--coco-path", str(root), "--split", "val", "--out", str(tmp_path / "p"))
    with contextlib.redirect_stdout(io.StringIO()):
        labelled = COCO(str(root / "annotations" / "instances_val2017.json"))
    assert 0.2 < evaluated == coco_ap(labelled, tmp_path / "p" / "predictions.json")


def test_compare_puts_the_ground_truth_beside_the_predictions(weights, tmp_path):
    invoke("predict", "--weights", weights, "--split", "val", "--out", str(tmp_path), "--compare")
    dataset = build_dataset(load_profile("tiny").data, "val", train=False)
    name = dataset.coco.imgs[dataset.ids[0]]["file_name"]
    width = Image.open(dataset.image_dir / name).width
    drawn = Image.open(tmp_path / name)
    factor = drawn.height // Image.open(dataset.image_dir / name).height
    assert drawn.width == 2 * width * factor + 8


def test_files_and_folders_unreadable_images_are_named_and_counted(weights, tmp_path):
    dataset = build_dataset(load_profile("tiny").data, "val", train=False)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(dataset.image_path(0), folder / "a.jpg")
    shutil.copy(dataset.image_path(1), folder / "sub" / "b.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "notes.txt").write_text("not an image")
    loose = tmp_path / "c.jpg"
    shutil.copy(dataset.image_path(2), loose)
    out = tmp_path / "out"
    summary = invoke("predict", "--weights", weights, str(folder), str(loose), "--out", str(out), "--batch-size", "3")
    assert summary["images"] == 3 and summary["unreadable"] == 1
    assert summary["unreadable_files"] == [str(folder / "broken.png")]
    assert {p.relative_to(out).as_posix() for p in out.rglob("*.*")} == {
        "a.jpg",
        "sub/b.jpg",
        "c.jpg",
        "predictions.json",
    }
    results = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in results} == {"a.jpg", "sub/b.jpg", "c.jpg"}
    assert all(len(r["bbox"]) == 4 and 0 <= r["score"] <= 1 for r in results)

    result = runner.invoke(app, ["predict", "--weights", weights, str(folder), "--out", str(out)])
    assert result.exit_code == 0 and "skipped" in result.stdout and "broken.png" in result.stdout

    inside = folder / "drawn"  # an --out inside the source: a second run does not predict on its own drawings
    for _ in range(2):
        assert invoke("predict", "--weights", weights, str(folder), "--out", str(inside))["images"] == 2


@pytest.mark.parametrize("case", ["empty folder", "only unreadable", "missing path", "not DETR"])
def test_bad_input_is_one_line_and_a_non_zero_exit(weights, tmp_path, case):
    import torch

    source = tmp_path / "images"
    source.mkdir()
    if case == "only unreadable":
        (source / "x.jpg").write_bytes(b"garbage")
    if case == "missing path":
        source = tmp_path / "nowhere"
    if case == "not DETR":
        torch.save({"model": {"conv.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
        weights = str(tmp_path / "other.pth")
        (source / "x.jpg").write_bytes(b"garbage")
    result = runner.invoke(app, ["predict", "--weights", weights, str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1 and result.output.strip().startswith("error:"), result.output
