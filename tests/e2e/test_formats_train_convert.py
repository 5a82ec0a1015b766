"""The native formats end to end: each trains with only the dataset folder given, and `convert` writes a COCO
export that reads back as the same images, boxes and categories."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from format_exports import cvat_xml, observed, via_project, voc_devkit, voc_labelimg, yolo_classes_txt, yolo_dataset
from typer.testing import CliRunner

from detr.config import DataConfig
from detr.data import find_layout
from detr.data.annotations import load_coco
from detr.data.layout import split_image_ids
from detrdoctor.cli import app

runner = CliRunner()
EXPORTS: dict[str, Callable[[Path], object]] = {
    "yolo": yolo_dataset,
    "voc": voc_devkit,
    "cvat-xml": cvat_xml,
    "via": via_project,
}


def splits_of(root: Path) -> dict[str, dict]:
    """Each split's images (the held-out share, or the rest, of a one-split dataset) with their annotations."""
    layout = find_layout(DataConfig(coco_path=str(root)))
    splits = {}
    for name in ("train", "val"):
        source = layout.split(name)
        data = load_coco(source).dataset
        ids = set(split_image_ids([img["id"] for img in data["images"]], source.part, layout.val_fraction))
        images = [img for img in data["images"] if img["id"] in ids]
        annotations = [a for a in data["annotations"] if a["image_id"] in ids]
        splits[name] = {**data, "images": images, "annotations": annotations, "part": source.part}
    return splits


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("kind", list(EXPORTS))
def test_a_native_dataset_trains_with_the_folder_alone(tmp_path: Path, kind: str) -> None:
    root = tmp_path / kind
    EXPORTS[kind](root)
    out = tmp_path / "run"
    args = ["train", "--profile", "tiny", "--coco-path", str(root), "--output-dir", str(out), "--max-steps", "2"]
    result = runner.invoke(app, [*args, "--eval-every", "2", "--no-dashboard"])
    assert result.exit_code == 0, result.output
    assert f"dataset: {find_layout(DataConfig(coco_path=str(root))).describe()}" in " ".join(result.output.split())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "step"] == [1, 2]
    assert any(r["type"] == "eval" for r in records)
    checkpoint = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=False)
    assert checkpoint["categories"] == splits_of(root)["train"]["categories"]


@pytest.mark.parametrize(
    "export",
    [yolo_dataset, yolo_classes_txt, voc_devkit, voc_labelimg, cvat_xml, via_project],
    ids=lambda f: f.__name__,
)
def test_convert_round_trips_to_coco(tmp_path: Path, export: Callable[[Path], object]) -> None:
    root, out = tmp_path / "dataset", tmp_path / "coco"
    export(root)
    before = snapshot(root)
    result = runner.invoke(app, ["convert", str(root), str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert snapshot(root) == before  # nothing written into ROOT
    native, converted = splits_of(root), splits_of(out)
    assert find_layout(DataConfig(coco_path=str(out))).kind == "coco"
    for split in ("train", "val"):
        assert observed(converted[split]) == observed(native[split]), split
        assert converted[split]["categories"] == native[split]["categories"]
        assert summary["splits"][split]["images"] == len(native[split]["images"]) > 0
        for img in converted[split]["images"]:
            file = out / f"{split}2017" / img["file_name"]
            assert file.is_file() and not file.is_symlink() and os.stat(file).st_nlink >= 2  # a hard link
    if native["val"]["part"] == "held_out":  # one split: the held-out share, disjoint from the rest
        assert not {i["id"] for i in converted["train"]["images"]} & {i["id"] for i in converted["val"]["images"]}
    assert summary["format"] == find_layout(DataConfig(coco_path=str(root))).kind
    assert summary["images"]["hard_links"] == sum(s["images"] for s in summary["splits"].values())


def test_convert_copies_and_refuses_a_used_or_inner_output_folder(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    voc_labelimg(root)
    copied = runner.invoke(app, ["convert", str(root), str(tmp_path / "copy"), "--copy"])
    assert copied.exit_code == 0, copied.output
    assert "images as 6 copies" in " ".join(copied.stdout.split())
    files = list((tmp_path / "copy" / "train2017").iterdir())
    assert files and all(os.stat(f).st_nlink == 1 for f in files)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    for out, message in ((tmp_path / "used", "exists and is not empty"), (root / "coco", "is inside the dataset")):
        result = runner.invoke(app, ["convert", str(root), str(out)])
        assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine" and not (root / "coco").exists()


def test_convert_of_an_unrecognised_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["convert", str(tmp_path / "empty"), str(tmp_path / "out")])
    assert result.exit_code == 1 and "no dataset layout found" in result.output and not (tmp_path / "out").exists()
