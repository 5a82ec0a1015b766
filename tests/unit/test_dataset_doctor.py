"""The dataset doctor: each rule fires on its seeded case, and all stay silent on clean data."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from exports import ROBOFLOW_CATEGORIES, coco_json, write_image

from detr.config import RunConfig
from detr.errors import DataError
from detrdoctor.callbacks.data_gate import DataCheckEvents, stop_on_failures
from detrdoctor.datadoctor.doctor import diagnose_dataset

IDS = (
    "data.num_classes",
    "data.num_queries",
    "data.box_format",
    "data.image_size",
    "data.pixels",
    "data.exif",
    "data.duplicates",
    "data.empty_images",
    "data.small_boxes",
    "data.crowd",
    "data.categories",
    "data.dropped_boxes",
    "data.readable",
)
CATEGORIES = [{"id": i, "name": n, "supercategory": "thing"} for i, n in ((1, "a"), (2, "b"), (3, "c"))]
BOXES = ((4, 4, 16, 12), (22, 20, 14, 16))


def clean_split(root: Path, split: str, count: int) -> dict:
    images, annotations = [], []
    for i in range(count):
        w, h = (60, 40) if i % 2 else (40, 60)
        name = f"{split.removesuffix('2017')}_{i}.jpg"
        write_image(root / split / name, w, h, boxes=BOXES)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        annotations += [
            {"image_id": i + 1, "category_id": 1 + (i + j) % 3, "bbox": list(b)} for j, b in enumerate(BOXES)
        ]
    return coco_json(images, annotations, [dict(c) for c in CATEGORIES])


def dataset(root: Path, edit: Callable[[dict, Path], None] | None = None) -> Path:
    """A clean COCO layout (8 train, 3 val images); `edit(train_json, root)` seeds a problem."""
    (root / "annotations").mkdir(parents=True)
    train, val = clean_split(root, "train2017", 8), clean_split(root, "val2017", 3)
    if edit:
        edit(train, root)
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(val))
    return root


def rows_of(cfg: RunConfig, root: Path) -> dict[str, dict]:
    cfg.data.coco_path = str(root)
    rows = diagnose_dataset(cfg)
    assert [r["id"] for r in rows] == list(IDS)
    return {r["id"]: r for r in rows}


def test_silent_on_the_synthetic_dataset_and_clean_data(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    synthetic = {r["id"]: r for r in diagnose_dataset(tiny_cfg)}
    assert {k: r["status"] for k, r in synthetic.items()} == dict.fromkeys(IDS, "pass")
    clean = rows_of(tiny_cfg, dataset(tmp_path))
    assert {k: r["status"] for k, r in clean.items()} == dict.fromkeys(IDS, "pass")
    assert all({"found", "expected", "fix", "message", "count", "example"} <= r.keys() for r in clean.values())


def crowded(n: int) -> Callable[[dict, Path], None]:
    def edit(data: dict, root: Path) -> None:
        data["annotations"] += [
            {"id": 100 + k, "image_id": 1, "category_id": 1, "bbox": [1 + k, 1, 2, 2], "iscrowd": 0} for k in range(n)
        ]

    return edit


def as_xyxy(data: dict, root: Path) -> None:
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        a["bbox"] = [x, y, x + w, y + h]


def wrong_sizes(data: dict, root: Path) -> None:
    for img in data["images"]:
        img["width"], img["height"] = img["width"] * 2, img["height"] * 2


def flipped_exif(data: dict, root: Path) -> None:
    write_image(root / "train2017" / "train_0.jpg", 40, 60, boxes=BOXES, orientation=3)


def duplicated(data: dict, root: Path) -> None:
    data["annotations"].append({**data["annotations"][0], "id": 999})


def empty_images(data: dict, root: Path) -> None:
    for i in range(9, 17):
        write_image(root / "train2017" / f"empty_{i}.jpg", 40, 60)
        data["images"].append({"id": i, "file_name": f"empty_{i}.jpg", "width": 40, "height": 60})


def small_boxes(data: dict, root: Path) -> None:
    data["annotations"].append({"id": 998, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0.4, 6], "iscrowd": 0})


def crowd(data: dict, root: Path) -> None:
    for a in data["annotations"][:4]:
        a["iscrowd"] = 1


def unused_category(data: dict, root: Path) -> None:
    data["categories"].append({"id": 4, "name": "never", "supercategory": "thing"})


@pytest.mark.parametrize(
    ("edit", "rule", "status", "example"),
    [
        (crowded(10), "data.num_queries", "fail", "train_0.jpg"),  # 12 objects, 10 queries
        (crowded(7), "data.num_queries", "warn", "train_0.jpg"),  # 9 objects: few spare queries
        (as_xyxy, "data.box_format", "fail", "annotation 2"),
        (wrong_sizes, "data.image_size", "fail", "train_0.jpg (80×120 in the JSON, 40×60 on disk)"),
        (flipped_exif, "data.exif", "warn", "train_0.jpg"),
        (duplicated, "data.duplicates", "warn", "annotation 999 repeats 1"),
        (empty_images, "data.empty_images", "warn", "empty_9.jpg"),
        (small_boxes, "data.small_boxes", "warn", "annotation 998"),
        (crowd, "data.crowd", "warn", "annotation 1"),
        (unused_category, "data.categories", "warn", "never"),
    ],
)
def test_each_rule_fires_on_its_case(
    tiny_cfg: RunConfig, tmp_path: Path, edit, rule: str, status: str, example: str
) -> None:
    rows = rows_of(tiny_cfg, dataset(tmp_path, edit))
    assert rows[rule]["status"] == status, rows[rule]
    assert example in rows[rule]["example"] and rows[rule]["count"] >= 1 and rows[rule]["fix"]


def test_num_classes_too_small_fails_and_auto_fits(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    root = dataset(tmp_path)
    tiny_cfg.model.num_classes = 3  # ids 1..3 need 4
    row = rows_of(tiny_cfg, root)["data.num_classes"]
    assert row["status"] == "fail" and row["example"] == "c" and "num_classes = 4" in row["fix"]
    tiny_cfg.model.num_classes = "auto"
    assert rows_of(tiny_cfg, root)["data.num_classes"]["found"] == "auto → 4 (largest id 3)"


def test_exif_rotation_labelled_upright_passes(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    def rotated(data: dict, root: Path) -> None:
        write_image(root / "train2017" / "train_0.jpg", 60, 40, boxes=BOXES, orientation=6)  # shown 40×60

    row = rows_of(tiny_cfg, dataset(tmp_path, rotated))["data.exif"]
    assert row["status"] == "pass" and "decoded upright" in row["message"] and row["count"] == 1


def test_roboflow_parent_category_is_noted_not_warned(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    def parent(data: dict, root: Path) -> None:
        data["categories"] = [dict(c) for c in ROBOFLOW_CATEGORIES]
        for a in data["annotations"]:
            a["category_id"] = 17

    tiny_cfg.model.num_classes = "auto"
    row = rows_of(tiny_cfg, dataset(tmp_path, parent))["data.categories"]
    # The parent 0 (cells) has no boxes by design; red and white have none either: those are the finding.
    assert row["status"] == "warn" and "2 categories without boxes in train (red, white)" in row["found"]
    assert "0 cells" in row["message"]


def test_val_categories_not_in_train(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    def only_a(data: dict, root: Path) -> None:
        data["annotations"] = [a for a in data["annotations"] if a["category_id"] == 1]
        data["categories"] = data["categories"][:1]

    row = rows_of(tiny_cfg, dataset(tmp_path, only_a))["data.categories"]
    assert row["status"] == "warn"
    assert "train and val list different categories" in row["found"] and "in val but not in train" in row["found"]


def test_train_stops_on_a_failed_check_and_records_warnings(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    rows = rows_of(tiny_cfg, dataset(tmp_path, crowded(10)))
    with pytest.raises(DataError) as info:
        stop_on_failures(list(rows.values()), "detrdoctor env-check --coco-path X")
    message = str(info.value)
    assert "\n" not in message and message.startswith("dataset check data.num_queries: up to 12 objects per image")
    assert "fix: set num_queries ≥ 12" in message
    assert [r["id"] for r in DataCheckEvents(list(rows.values())).rows] == []  # a fail is not a warning
