"""The layouts people have, found with no flags; and hints that lead somewhere, repeating the flags given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from exports import (
    coco_export,
    instances_split_export,
    roboflow_export,
    tutorial_export,
    windows_paths,
    write_json,
)

from detr.config import DataConfig, RunConfig
from detr.data import find_layout
from detr.data.split import layout_line, load_split
from detr.errors import DataError
from detrdoctor.runconfig import env_check_command


def layout_error(cfg: DataConfig) -> str:
    with pytest.raises(DataError) as info:
        find_layout(cfg)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_instances_train_json_beside_train_folder_is_found(tmp_path: Path) -> None:
    root = instances_split_export(tmp_path)
    layout = find_layout(DataConfig(coco_path=str(root)))
    assert layout.kind == "coco" and layout.train.images == root / "train" and layout.val.images == root / "val"
    assert layout.val.annotations == root / "annotations" / "instances_val.json"
    assert len(load_split(DataConfig(coco_path=str(root)), "train").images) == 6


def test_the_official_tutorial_layout_is_found(tmp_path: Path) -> None:
    root = tutorial_export(tmp_path)
    layout = find_layout(DataConfig(coco_path=str(root)))
    assert layout.kind == "named-files" and layout.train.annotations == root / "annotations" / "custom_train.json"
    assert (layout.train.images, layout.val.images) == (root / "train2017", root / "val2017")
    assert layout.val.annotations == root / "annotations" / "custom_val.json" and layout.val.part == "all"


def test_cocos_other_task_files_do_not_make_it_ambiguous(tmp_path: Path) -> None:
    root = coco_export(tmp_path)
    for name in ("captions_train2017.json", "person_keypoints_train2017.json"):
        shutil.copy(root / "annotations" / "instances_train2017.json", root / "annotations" / name)
    assert find_layout(DataConfig(coco_path=str(root))).kind == "coco"


def test_two_fitting_layouts_are_listed_with_the_flags_that_select_each(tmp_path: Path) -> None:
    root = coco_export(tmp_path)
    for split in ("train", "val"):
        shutil.copy(root / "annotations" / f"instances_{split}2017.json", root / "annotations" / f"custom_{split}.json")
    message = layout_error(DataConfig(coco_path=str(root), val_fraction=0.2))
    assert "2 layouts fit" in message
    assert (
        f"--data {root} --train-annotations annotations/instances_train2017.json --val-annotations "
        "annotations/instances_val2017.json --train-images train2017 --val-images val2017" in message
    )
    assert "--train-annotations annotations/custom_train.json" in message
    picked = find_layout(
        DataConfig(
            coco_path=str(root),
            train_annotations="annotations/custom_train.json",
            val_annotations="annotations/custom_val.json",
        )
    )
    assert picked.train.images == root / "train2017" and picked.val.images == root / "val2017"


def test_only_train_annotations_given_finds_the_images_beside_it(tmp_path: Path) -> None:
    root = instances_split_export(tmp_path)
    (root / "annotations" / "instances_val.json").unlink()
    shutil.rmtree(root / "val")
    layout = find_layout(DataConfig(coco_path=str(root), train_annotations="annotations/instances_train.json"))
    assert layout.train.images == root / "train" and layout.val.part == "held_out"  # not annotations/


def test_an_archive_says_unzip_it_first(tmp_path: Path) -> None:
    (tmp_path / "export.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    message = layout_error(DataConfig(coco_path=str(tmp_path / "export.zip")))
    assert "unzip it first" in message and f"--data {tmp_path / 'export'}" in message
    message = layout_error(DataConfig(coco_path=str(tmp_path)))
    assert "export.zip is here: unzip it first" in message


def test_a_roboflow_split_folder_says_point_at_its_parent(tmp_path: Path) -> None:
    root = roboflow_export(tmp_path / "export")
    message = layout_error(DataConfig(coco_path=str(root / "train")))
    assert "one split of a Roboflow export: point at its parent" in message and f"--data {root}" in message


def test_a_label_studio_json_says_export_as_coco(tmp_path: Path) -> None:
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}, "annotations": [{"result": []}]}]
    write_json(tmp_path / "project.json", tasks)
    assert "Label Studio JSON export (a list of tasks), not COCO: export as COCO" in layout_error(
        DataConfig(coco_path=str(tmp_path))
    )
    (tmp_path / "result.json").write_text(json.dumps(tasks))  # Label Studio's file name, its own format
    (tmp_path / "project.json").unlink()
    with pytest.raises(DataError, match="result.json: .* not COCO; fix: export as COCO"):
        load_split(DataConfig(coco_path=str(tmp_path)), "train")


def test_no_layout_hint_repeats_the_flags_given(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    message = layout_error(DataConfig(coco_path=str(tmp_path / "empty"), val_images="v"))
    assert f"--data {tmp_path / 'empty'} --train-annotations FILE --train-images DIR --val-images v" in message


def test_the_env_check_hint_repeats_the_flags_given(tmp_path: Path) -> None:
    data = DataConfig(coco_path=str(tmp_path / "my data"), train_annotations="a.json", train_images="imgs")
    cfg = RunConfig(data=data)
    assert env_check_command(cfg, "tiny") == (
        f"detrdoctor env-check --data '{tmp_path / 'my data'}' --train-annotations a.json --train-images imgs "
        "--profile tiny"
    )


def test_windows_separators_are_said_in_the_layout_line(tmp_path: Path) -> None:
    root = coco_export(tmp_path)
    windows_paths(root)
    line = layout_line(find_layout(DataConfig(coco_path=str(root))))
    assert line.endswith("; 6 file names with \\ separators read as /")


def test_env_check_says_unzip_an_archive_given_as_the_dataset() -> None:
    from detrdoctor.envcheck.rules import rule_dataset

    facts = {
        "options": {"coco_path": "/data/export.zip"},
        "probes": {"dataset": {"steps": {"root": {"exists": False, "archive": True}}}},
    }
    (row,) = rule_dataset(facts)
    assert row["status"] == "fail" and row["found"] == "/data/export.zip: an archive"
    assert row["fix"].startswith("unzip it first (unzip /data/export.zip -d /data/export)")
