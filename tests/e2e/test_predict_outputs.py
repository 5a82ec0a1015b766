"""`predict` writes inside --out only and never onto an input; non-finite weights are one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from detr.data import build_dataset
from detr.engine.trainer import Trainer
from detrdoctor.cli import app
from detrdoctor.profiles import load_profile

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = load_profile("tiny")
    cfg.train.max_steps, cfg.train.lr_backbone = 1, 0.0
    folder = tmp_path_factory.mktemp("run")
    Trainer(cfg, output_dir=folder).fit()
    return str(folder / "checkpoint.pth")


def tree(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def dataset_with_escaping_names(root: Path, elsewhere: Path) -> list[Path]:
    """A val split whose file names are absolute, `../` and plain; returns the image files it reads."""
    val = build_dataset(load_profile("tiny").data, "val", train=False)
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    elsewhere.mkdir()
    images, read = [], []
    for i, image_id in enumerate(val.ids[:3]):
        info = dict(val.coco.imgs[image_id])
        if i == 0:
            target = elsewhere / "absolute.jpg"
            info["file_name"] = str(target)
        elif i == 1:
            target = root / "outside.jpg"
            info["file_name"] = "../outside.jpg"
        else:
            target = root / "val2017" / info["file_name"]
        shutil.copy(val.image_path(i), target)
        images.append(info)
        read.append(target)
    annotations = [a for a in val.coco.dataset["annotations"] if a["image_id"] in {img["id"] for img in images}]
    data = {"images": images, "annotations": annotations, "categories": val.coco.dataset["categories"]}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(data))
    shutil.copytree(root / "val2017", root / "train2017")
    return read


def test_dataset_names_stay_inside_out_and_inputs_stay_as_they_were(weights, tmp_path):
    root, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    read = dataset_with_escaping_names(root, elsewhere)
    before = tree(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", "--weights", weights, "--split", "val", "--coco-path", str(root), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"] == 3
    after = tree(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before  # inputs byte-identical
    drawn = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    # the absolute name keeps its folders below the root, `../` is dropped, the plain name is kept
    assert drawn == {str(read[0]).lstrip("/"), "outside.jpg", read[2].name, "predictions.json"}


@pytest.mark.parametrize("where", ["the image folder", "its parent"])
def test_an_out_that_is_or_holds_the_image_folder_is_refused(weights, tmp_path, where):
    root = tmp_path / "data"
    dataset_with_escaping_names(root, tmp_path / "elsewhere")
    before = tree(tmp_path)
    out = root / "val2017" if where == "the image folder" else root
    result = runner.invoke(
        app, ["predict", "--weights", weights, "--split", "val", "--coco-path", str(root), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "would replace the images read" in result.output
    assert tree(tmp_path) == before


def test_a_drawn_image_never_lands_on_an_image_read(weights, tmp_path):
    """--out inside the image folder is allowed, but there `x.jpg` drawn would be `sub/x.jpg` read."""
    val = build_dataset(load_profile("tiny").data, "val", train=False)
    root = tmp_path / "data"
    (root / "val2017" / "sub").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for i, name in enumerate(["x.jpg", "sub/x.jpg"]):
        shutil.copy(val.image_path(i), root / "val2017" / name)
        images.append({**val.coco.imgs[val.ids[i]], "file_name": name})
    data = {"images": images, "annotations": [], "categories": val.coco.dataset["categories"]}
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    before = tree(root / "val2017")
    out = root / "val2017" / "sub"
    result = runner.invoke(
        app, ["predict", "--weights", weights, "--split", "val", "--coco-path", str(root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    after = tree(root / "val2017")
    assert {k: after[k] for k in before} == before
    assert set(after) - set(before) == {"sub/x-2.jpg", "sub/sub/x.jpg", "sub/predictions.json"}


def test_non_finite_weights_are_one_line_and_write_no_predictions(weights, tmp_path):
    ckpt = torch.load(weights, weights_only=True)
    ckpt["model"]["class_embed.weight"][0, 0] = float("nan")
    broken = tmp_path / "nan.pth"
    torch.save(ckpt, broken)
    for command in (["evaluate"], ["predict", "--split", "val", "--out", str(tmp_path / "out")]):
        result = runner.invoke(app, [*command, "--weights", str(broken)])
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "hold NaN or Inf (class_embed.weight)" in errors[0], result.output
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_plot_skips_a_torn_last_line_and_says_so(tmp_path):
    records = [{"type": "step", "step": s, "epoch": 0, "loss": 1.0 / s} for s in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"type": "st')
    result = runner.invoke(app, ["plot", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert "skipped its torn last line" in result.stderr
    assert json.loads(result.stdout)["runs"][0]["steps"] == 2


def test_a_decompression_bomb_is_named_and_skipped_by_predict_and_fails_the_training_check(weights, tmp_path):
    from exports import bomb_png, cvat_export

    val = build_dataset(load_profile("tiny").data, "val", train=False)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(val.image_path(0), folder / "a.jpg")
    bomb_png(folder / "bomb.png")
    out = str(tmp_path / "out")
    result = runner.invoke(app, ["predict", "--weights", weights, str(folder), "--out", out, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["images"] == 1 and summary["oversized_files"] == [str(folder / "bomb.png")]

    root = cvat_export(tmp_path / "data")
    bomb_png(root / "images" / "frame_0.jpg")  # a PNG under a .jpg name: the header tells
    result = runner.invoke(
        app, ["train", "--profile", "tiny", "--coco-path", str(root), "--output-dir", str(tmp_path / "run")]
    )
    assert result.exit_code != 0
    assert "data.pixels" in result.output and "frame_0.jpg" in result.output, result.output
    assert not (tmp_path / "run").exists()
