"""The COCO dataset: targets against hand-checked annotations, every bad input's message, corrupt JPEGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detr.config import DataConfig
from detr.data import build_dataset, check_dataset
from detr.errors import DataError

CATEGORIES = [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}]
# Image 1 is 40 wide × 30 high, image 2 is 30 × 40 and has no usable annotation.
ANNOTATIONS = [
    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 8], "iscrowd": 0},  # kept
    {"id": 2, "image_id": 1, "category_id": 7, "bbox": [30, 20, 20, 20], "iscrowd": 0},  # clamped to 40×30
    {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1},  # crowd
    {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 1, 0, 5], "iscrowd": 0},  # zero width
    {"id": 5, "image_id": 1, "category_id": 1, "bbox": [50, 50, 5, 5], "iscrowd": 0},  # outside
    {"id": 6, "image_id": 1, "category_id": 99, "bbox": [2, 2, 5, 5], "iscrowd": 0},  # unknown category
    {"id": 7, "image_id": 2, "category_id": 7, "bbox": [3, 4, -2, 5]},  # negative width
]


def write_coco(root: Path, split: str = "val2017", annotations: list[dict] | None = None) -> None:
    (root / split).mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    images = []
    for image_id, (w, h) in ((1, (40, 30)), (2, (30, 40))):
        name = f"{image_id:012d}.jpg"
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(root / split / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    data = {
        "images": images,
        "annotations": ANNOTATIONS if annotations is None else annotations,
        "categories": CATEGORIES,
    }
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def no_resize_cfg(root: Path) -> DataConfig:
    # Shorter side 30 is both images' own: the evaluation transform leaves the geometry alone.
    return DataConfig(coco_path=str(root), val_size=30, max_size=1000)


def test_targets_match_hand_checked_annotations(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_coco(tmp_path)
    ds = build_dataset(no_resize_cfg(tmp_path), "val", train=False)
    assert capsys.readouterr().out == ""  # pycocotools' progress prints are silenced
    assert len(ds) == 2 and ds.ids == [1, 2] and ds.aspect_ratios() == [40 / 30, 30 / 40]
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert target["labels"].tolist() == [1, 7] and target["labels"].dtype == torch.int64
    # xyxy [5, 5, 15, 13] and [30, 20, 40, 30] → cxcywh relative to 40×30.
    expected = torch.tensor([[10 / 40, 9 / 30, 10 / 40, 8 / 30], [35 / 40, 25 / 30, 10 / 40, 10 / 30]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["image_id"] == 1
    assert target["orig_size"].tolist() == [30, 40] and target["size"].tolist() == [30, 40]
    assert "corrupt_files" not in target
    _, empty = ds[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    # ImageNet normalisation of the grey 90 image.
    assert abs(image[0, 0, 0].item() - (90 / 255 - 0.485) / 0.229) < 0.05


def test_check_summary_counts_what_is_dropped_or_clamped(tmp_path: Path) -> None:
    write_coco(tmp_path)
    summary = check_dataset(no_resize_cfg(tmp_path), "val")
    assert {
        k: summary[k]
        for k in (
            "images",
            "annotations",
            "usable_annotations",
            "crowd",
            "degenerate",
            "outside_image",
            "clamped",
            "unknown_category",
            "images_without_annotations",
            "max_category_id",
            "categories",
        )
    } == {
        "images": 2,
        "annotations": 7,
        "usable_annotations": 2,
        "crowd": 1,
        "degenerate": 2,
        "outside_image": 1,
        "clamped": 1,
        "unknown_category": 1,
        "images_without_annotations": 1,
        "max_category_id": 7,
        "categories": 2,
    }


def test_train_split_and_custom_annotation_path(tmp_path: Path) -> None:
    write_coco(tmp_path, split="mytrain")
    (tmp_path / "annotations" / "instances_mytrain.json").rename(tmp_path / "labels.json")
    # No validation file: a share of the training file is held out, none with val_fraction = 0.
    cfg = DataConfig(
        coco_path=str(tmp_path),
        train_split="mytrain",
        train_annotations="labels.json",
        val_fraction=0.0,
        train_scales=[20],
        max_size=40,
        crop_resize_scales=[24],
        crop_min_size=10,
        crop_max_size=20,
    )
    assert check_dataset(cfg, "train")["images"] == 2
    ds = build_dataset(cfg, "train", train=True, seed=3)
    image, target = ds[0]
    assert min(image.shape[-2:]) == 20 and target["size"].tolist() == list(image.shape[-2:])


def one_line_error(cfg: DataConfig, split: str = "val") -> str:
    with pytest.raises(DataError) as info:
        check_dataset(cfg, split)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_root(tmp_path: Path) -> None:
    message = one_line_error(DataConfig(coco_path=str(tmp_path / "nope")))
    assert str(tmp_path / "nope") in message and "not found" in message


def test_missing_annotation_file(tmp_path: Path) -> None:
    (tmp_path / "val2017").mkdir()
    message = one_line_error(DataConfig(coco_path=str(tmp_path)))
    assert "instances_val2017.json" in message and "annotation file not found" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not COCO: the top level is not an object"),
        ('{"images": [], "annotations": []}', "not COCO: no list 'categories'"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1}]}', "images[0].file_name = None"),
        (
            '{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 3, "image_id": 1, '
            '"category_id": 1, "bbox": [1, 2]}], "categories": [{"id": 1}]}',
            "annotations[0].bbox = [1, 2]: not 4 finite numbers; fix: write boxes as [x, y, width, height]",
        ),
    ],
)
def test_malformed_annotation_file(tmp_path: Path, content: str, expected: str) -> None:
    write_coco(tmp_path)
    ann = tmp_path / "annotations" / "instances_val2017.json"
    ann.write_text(content)
    message = one_line_error(DataConfig(coco_path=str(tmp_path)))
    assert str(ann) in message and expected in message


def test_missing_images_are_counted_and_named(tmp_path: Path) -> None:
    write_coco(tmp_path)
    (tmp_path / "val2017" / "000000000002.jpg").unlink()
    message = one_line_error(DataConfig(coco_path=str(tmp_path)))
    assert "1 of 2 images" in message and "000000000002.jpg" in message


def test_missing_image_folder(tmp_path: Path) -> None:
    write_coco(tmp_path)
    for f in (tmp_path / "val2017").iterdir():
        f.unlink()
    (tmp_path / "val2017").rmdir()
    assert "image folder not found" in one_line_error(DataConfig(coco_path=str(tmp_path)))


def test_corrupt_jpeg_is_replaced_deterministically_and_named(tmp_path: Path) -> None:
    write_coco(tmp_path)
    bad = tmp_path / "val2017" / "000000000001.jpg"
    bad.write_bytes(bad.read_bytes()[:200])  # truncated
    ds = build_dataset(no_resize_cfg(tmp_path), "val", train=False)
    image, target = ds[0]
    assert target["corrupt_files"] == [str(bad)]
    assert target["image_id"] == 2 and image.shape == (3, 40, 30)
    again = ds[0]
    assert again[1]["image_id"] == 2 and torch.equal(again[0], image)
    assert "corrupt_files" not in ds[1][1]


def test_all_images_corrupt_is_a_data_error(tmp_path: Path) -> None:
    write_coco(tmp_path)
    for f in (tmp_path / "val2017").iterdir():
        f.write_bytes(b"not a jpeg")
    ds = build_dataset(no_resize_cfg(tmp_path), "val", train=False)
    with pytest.raises(DataError, match="unreadable images in a row"):
        ds[0]
