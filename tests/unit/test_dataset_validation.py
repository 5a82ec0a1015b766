"""One validation of the COCO dict, and the doctor's counts equal to the trainer's on every generated export."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from exports import (
    boxes_outside,
    coco_export,
    cvat_export,
    deep_json,
    duplicate_image_id,
    edit_train,
    float_image_ids,
    images_without_boxes,
    iscrowd_yes,
    label_studio_export,
    mixed_image_ids,
    nan_box,
    no_images,
    null_image_id,
    roboflow_export,
    string_category_ids,
    string_image_ids,
    windows_paths,
    write_image,
)

from detr.config import DataConfig, RunConfig
from detr.data import check_dataset
from detr.data.split import training_objects_limit
from detr.errors import DataError
from detrdoctor.datadoctor.doctor import diagnose_dataset, read_headers

TRAIN_FILE = "annotations/instances_train2017.json"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (string_image_ids, "images[0].id = 'img-1': id not an integer (and 5 more like it)"),
        (float_image_ids, "images[0].id = 1.0: id not an integer"),
        (mixed_image_ids, "images[1].id = '2': id not an integer"),
        (null_image_id, "images[2].id = None: id not an integer"),
        (duplicate_image_id, "images[1].id = 1: id already used by images[0]"),
        (string_category_ids, "categories[0].id = '1': id not an integer"),
        (iscrowd_yes, "annotations[3].iscrowd = 'yes': not 0 or 1; fix: set iscrowd to 0"),
        (no_images, "images = []: no images"),
        (nan_box, "annotations[0].bbox = [1, 2, nan, 4]: not 4 finite numbers"),
    ],
)
def test_each_validation_failure_is_one_line_with_file_path_value_and_fix(
    tmp_path: Path, edit: Callable[[dict], None], expected: str
) -> None:
    root = coco_export(tmp_path)
    path = edit_train(root, edit)
    with pytest.raises(DataError) as info:
        check_dataset(DataConfig(coco_path=str(root)), "train")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and expected in message and "fix: " in message


def test_a_deeply_nested_json_is_one_line(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    root = coco_export(tmp_path)
    deep_json(root / TRAIN_FILE)
    tiny_cfg.data.coco_path = str(root)
    with pytest.raises(DataError) as info:
        diagnose_dataset(tiny_cfg)
    assert str(info.value).startswith(f"{root / TRAIN_FILE}: JSON nested too deep") and "\n" not in str(info.value)


def test_a_val_file_training_evaluates_on_must_be_usable(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    root = coco_export(tmp_path)
    edit_train(root, null_image_id, "annotations/instances_val2017.json")
    tiny_cfg.data.coco_path = str(root)
    tiny_cfg.train.eval_every = 1
    with pytest.raises(DataError, match=r"instances_val2017.json: images\[2\].id = None"):
        diagnose_dataset(tiny_cfg)
    tiny_cfg.train.eval_every = 0  # never evaluated: not the doctor's business
    assert diagnose_dataset(tiny_cfg)


def doctor_and_summary(cfg: RunConfig) -> tuple[dict[str, dict], dict]:
    rows = {r["id"]: r for r in diagnose_dataset(cfg)}
    limit = training_objects_limit(cfg.model.num_queries, cfg.data.skip_images_over_queries)
    return rows, dict(check_dataset(cfg.data, "train", limit))


def with_windows_paths(root: Path) -> Path:
    windows_paths(root)
    return root


EXPORTS: dict[str, Callable[[Path], Path]] = {
    "coco": coco_export,
    "roboflow": roboflow_export,
    "cvat": cvat_export,
    "label-studio": label_studio_export,
    "outside": lambda root: edit_train(coco_export(root), boxes_outside).parents[1],
    "empty-images": lambda root: edit_train(coco_export(root), images_without_boxes).parents[1],
    "windows-paths": lambda root: with_windows_paths(coco_export(root)),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_data_summary_equals_the_doctors_counts(tmp_path: Path, tiny_cfg: RunConfig, name: str) -> None:
    tiny_cfg.data.coco_path = str(EXPORTS[name](tmp_path / "export"))
    tiny_cfg.model.num_classes = "auto"
    rows, summary = doctor_and_summary(tiny_cfg)
    dropped = rows["data.dropped_boxes"]
    assert dropped["counts"] == {k: v for k, v in summary.items() if k in dropped["counts"]}
    assert rows["data.empty_images"]["count"] == summary["images_without_annotations"]
    assert rows["data.crowd"]["count"] == summary["crowd"]
    assert dropped["count"] == sum(
        summary[k] for k in ("outside_image", "degenerate", "unknown_category", "unknown_image")
    )


def test_boxes_wholly_outside_are_counted_by_both_and_fail(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    tiny_cfg.data.coco_path = str(EXPORTS["outside"](tmp_path))
    rows, summary = doctor_and_summary(tiny_cfg)
    assert summary["outside_image"] == 4 == rows["data.dropped_boxes"]["counts"]["outside_image"]  # 12 boxes, every 3rd
    assert (
        rows["data.dropped_boxes"]["status"] == "fail"
        and "annotation 1: bbox [104, 90, 10, 10]" in (rows["data.dropped_boxes"]["example"])
    )
    assert rows["data.box_format"]["status"] == "pass"


def test_windows_separators_are_read_as_slashes(tmp_path: Path) -> None:
    root = with_windows_paths(coco_export(tmp_path))
    summary = check_dataset(DataConfig(coco_path=str(root)), "train")
    assert summary["images"] == 6 and summary["notes"] == ["6 file names with \\ separators read as /"]


def test_too_many_objects_names_the_images_and_offers_both_fixes(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    def crowded(data: dict) -> None:
        data["annotations"] += [
            {"id": 100 + k, "image_id": 2, "category_id": 1, "bbox": [1 + k, 1, 2, 2], "iscrowd": 0, "area": 4}
            for k in range(11)
        ]

    root = coco_export(tmp_path)
    edit_train(root, crowded)
    tiny_cfg.data.coco_path = str(root)  # the tiny profile: 10 queries; image 2 holds 13 objects
    rows, _ = doctor_and_summary(tiny_cfg)
    row = rows["data.num_queries"]
    assert row["status"] == "fail" and row["count"] == 1 and "train2017_1.jpg (13)" in row["message"]
    assert "num_queries ≥ 13" in row["fix"] and "skip_images_over_queries = true" in row["fix"]
    tiny_cfg.data.skip_images_over_queries = True
    rows, summary = doctor_and_summary(tiny_cfg)
    row = rows["data.num_queries"]
    assert row["status"] == "warn" and "1 training images left out: train2017_1.jpg (13)" in row["message"]
    assert summary["images"] == 5 and summary["skipped_images"] == 1
    assert rows["data.dropped_boxes"]["counts"]["skipped_images"] == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_file_that_never_answers_is_named_within_the_limit(tmp_path: Path) -> None:
    write_image(tmp_path / "a.jpg", 40, 30)
    os.mkfifo(tmp_path / "stuck.jpg")  # opening it blocks until a writer comes: none will
    images = [{"file_name": "a.jpg"}, {"file_name": "stuck.jpg"}]
    started = time.monotonic()
    headers = read_headers(tmp_path, images, 8, timeout_s=1.0)
    assert time.monotonic() - started < 5
    assert headers[0]["real"] == (40, 30) and headers[1] == {
        "file_name": "stuck.jpg",
        "json": (None, None),
        "timeout": 1.0,
    }
