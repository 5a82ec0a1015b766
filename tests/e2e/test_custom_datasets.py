"""Custom exports: layouts found, num_classes from the data, and training on them with no profile edit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from exports import cvat_export, label_studio_export, roboflow_export, write_image
from typer.testing import CliRunner

from detr.config import DataConfig, RunConfig, config_from_dict
from detr.data import build_dataset, find_layout, resolve_num_classes
from detr.data.decode import read_rgb
from detr.data.layout import split_image_ids
from detr.errors import ConfigError, DataError
from detrdoctor.cli import app
from detrdoctor.profiles import PROFILE_DIR

runner = CliRunner()
TINY = PROFILE_DIR / "tiny.toml"


def tiny_auto_profile(folder: Path) -> Path:
    """The tiny profile with num_classes left to the data, as a user's profile would."""
    path = folder / "tiny-auto.toml"
    path.write_text(TINY.read_text().replace("num_classes = 7", 'num_classes = "auto"'))
    return path


# ---------------------------------------------------------------- layouts


def test_roboflow_layout(tmp_path: Path) -> None:
    layout = find_layout(DataConfig(coco_path=str(roboflow_export(tmp_path))))
    assert layout.kind == "roboflow"
    assert layout.train.annotations == tmp_path / "train" / "_annotations.coco.json"
    assert layout.val.images == tmp_path / "valid" and layout.val.part == "all"
    assert layout.describe().startswith(f"Roboflow export at {tmp_path}: train train/_annotations.coco.json")


def test_single_file_exports_get_a_held_out_split(tmp_path: Path) -> None:
    cvat = find_layout(DataConfig(coco_path=str(cvat_export(tmp_path / "cvat"))))
    assert cvat.kind == "cvat" and cvat.train.images == tmp_path / "cvat" / "images"
    assert (cvat.train.part, cvat.val.part) == ("rest", "held_out") and "10% of its images held out" in cvat.describe()
    studio = find_layout(DataConfig(coco_path=str(label_studio_export(tmp_path / "ls"))))
    # Label Studio's file names already start with images/: the folder is the export's root.
    assert studio.kind == "label-studio" and studio.train.images == tmp_path / "ls"
    train = build_dataset(DataConfig(coco_path=str(tmp_path / "cvat")), "train", train=False)
    val = build_dataset(DataConfig(coco_path=str(tmp_path / "cvat")), "val", train=False)
    assert (len(train), len(val)) == (9, 1) and not set(train.ids) & set(val.ids)


def test_held_out_share_is_deterministic_spread_and_disjoint() -> None:
    ids = list(range(100, 0, -1))  # file order must not matter
    held = split_image_ids(ids, "held_out", 0.1)
    assert held == [6, 16, 26, 36, 46, 56, 66, 76, 86, 96]
    assert sorted(held + split_image_ids(ids, "rest", 0.1)) == sorted(ids)
    assert split_image_ids([1, 2, 3], "held_out", 0.1) == [2]  # at least one image of two or more
    assert split_image_ids([1, 2, 3], "held_out", 0.0) == []


def test_flags_override_the_layout(tmp_path: Path) -> None:
    roboflow_export(tmp_path)
    cfg = DataConfig(
        coco_path=str(tmp_path),
        train_annotations="valid/_annotations.coco.json",
        val_annotations="train/_annotations.coco.json",
        val_images="train",
    )
    layout = find_layout(cfg)
    assert layout.kind == "flags" and layout.train.images == tmp_path / "valid" and layout.val.part == "all"
    only_train = find_layout(DataConfig(coco_path=str(tmp_path), train_annotations="train/_annotations.coco.json"))
    assert only_train.val.images == tmp_path / "valid"  # the validation split found stays
    (tmp_path / "train" / "_annotations.coco.json").rename(tmp_path / "labels.json")
    alone = find_layout(DataConfig(coco_path=str(tmp_path), train_annotations="labels.json", train_images="train"))
    assert alone.kind == "flags" and alone.train.images == tmp_path / "train"
    assert alone.val.part == "held_out" and alone.val.annotations == tmp_path / "labels.json"


def test_ambiguous_and_missing_layouts_name_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    for name in ("instances_Train.json", "instances_Validation.json"):
        (tmp_path / "annotations" / name).write_text("{}")
    with pytest.raises(DataError) as info:
        find_layout(DataConfig(coco_path=str(tmp_path)))
    message = str(info.value)
    assert "\n" not in message and "instances_Train.json" in message and "--train-annotations" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as info:
        find_layout(DataConfig(coco_path=str(tmp_path / "empty")))
    message = str(info.value)
    assert "\n" not in message and "Roboflow" in message and "result.json" in message


# ---------------------------------------------------------------- num_classes


@pytest.mark.parametrize("value", ["seven", True, 0, 2.5, [7]])
def test_num_classes_takes_auto_or_a_positive_int(value: object) -> None:
    assert config_from_dict({"model": {"num_classes": "auto"}}).model.num_classes == "auto"
    assert config_from_dict({"model": {"num_classes": 18}}).model.num_classes == 18
    assert RunConfig().model.num_classes == "auto"
    with pytest.raises(ConfigError) as info:
        config_from_dict({"model": {"num_classes": value}})
    assert 'expected "auto" or a positive integer' in str(info.value) and "\n" not in str(info.value)


def test_auto_is_the_largest_training_id_plus_one(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    tiny_cfg.model.num_classes = "auto"
    assert resolve_num_classes(tiny_cfg) == 7 == tiny_cfg.model.num_classes  # the synthetic ids 1..6
    tiny_cfg.data.coco_path = str(roboflow_export(tmp_path))
    tiny_cfg.model.num_classes = "auto"
    assert resolve_num_classes(tiny_cfg) == 18  # ids 0 (the parent), 1, 5, 17


def test_explicit_num_classes_too_small_stops_before_anything_is_written(tmp_path: Path) -> None:
    root = roboflow_export(tmp_path / "export")
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["train", "--profile", "tiny", "--coco-path", str(root), "--output-dir", str(out), "--no-dashboard"]
    )
    assert result.exit_code == 1 and not out.exists()
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert str(root / "train" / "_annotations.coco.json") in error[0]
    assert "the largest category id is 17, but num_classes = 7" in error[0] and "num_classes = 18" in error[0]


# ---------------------------------------------------------------- training on the exports


@pytest.mark.parametrize("export", [roboflow_export, cvat_export, label_studio_export])
def test_exports_train_with_the_tiny_profile(tmp_path: Path, export) -> None:
    """Parent category 0, ids with gaps, grayscale/CMYK/palette/RGBA images, a crowd RLE, a zero-width box
    and a box past the border: the layout is found, num_classes set by the data, and a few steps run."""
    root = export(tmp_path / "export")
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--profile",
            str(tiny_auto_profile(tmp_path)),
            "--coco-path",
            str(root),
            "--output-dir",
            str(out),
            "--max-steps",
            "2",
            "--eval-every",
            "1",
            "--no-dashboard",
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "step"] == [1, 2]
    assert any(r["type"] == "eval" for r in records)
    checks = {r["check"]: r for r in records if r.get("kind") == "data_check"}
    assert checks["data.small_boxes"]["severity"] == "warning" and checks["data.small_boxes"]["count"] == 1
    needed = 18 if export is roboflow_export else 4 if export is cvat_export else 2
    assert f"num_classes = {needed}\n" in (out / "config.toml").read_text()


def test_image_with_exif_rotation_decodes_as_annotated(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    write_image(path, 40, 60, orientation=6)  # stored 40×60, shown 60×40
    assert read_rgb(path).shape[-2:] == (60, 40)  # as stored
    assert read_rgb(path, (40, 60)).shape[-2:] == (60, 40)  # labelled as stored
    assert read_rgb(path, (60, 40)).shape[-2:] == (40, 60)  # labelled upright


def test_env_check_judges_the_dataset_against_the_profile(tmp_path: Path) -> None:
    """No "ready" for data that cannot train: the doctor's rows join env-check's, a fail exits 1."""
    root = roboflow_export(tmp_path / "export")
    result = runner.invoke(
        app, ["env-check", "--coco-path", str(root), "--profile", "tiny", "--device", "cpu", "--json"]
    )
    document = json.loads(result.stdout)
    checks = {c["id"]: c for c in document["checks"]}
    assert result.exit_code == 1 and document["summary"]["exit_code"] == 1
    assert checks["dataset.layout"]["found"].startswith("Roboflow export at")
    row = checks["data.num_classes"]
    assert row["status"] == "fail" and row["count"] == 1 and row["example"] == "platelet"
    assert checks["data.categories"]["status"] == "pass" and "0 cells" in checks["data.categories"]["found"]


def test_no_held_out_images_is_one_line_before_anything_is_written(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    from detr.engine.trainer import Trainer

    tiny_cfg.data.coco_path = str(cvat_export(tmp_path / "export"))
    tiny_cfg.data.val_fraction = 0.0
    tiny_cfg.model.num_classes = "auto"
    tiny_cfg.train.eval_every = 1
    with pytest.raises(DataError) as info:
        Trainer(tiny_cfg, output_dir=tmp_path / "run")
    assert "the val split holds no images" in str(info.value) and not (tmp_path / "run").exists()
    assert len(build_dataset(tiny_cfg.data, "train", train=False)) == 10  # all of them train


def test_evaluate_scores_the_held_out_share(tmp_path: Path) -> None:
    root = cvat_export(tmp_path / "export")
    out = tmp_path / "run"
    trained = runner.invoke(
        app,
        [
            "train",
            "--profile",
            str(tiny_auto_profile(tmp_path)),
            "--coco-path",
            str(root),
            "--output-dir",
            str(out),
            "--max-steps",
            "1",
            "--eval-every",
            "0",
            "--no-dashboard",
        ],
    )
    assert trained.exit_code == 0, trained.output
    result = runner.invoke(
        app, ["evaluate", "--weights", str(out / "checkpoint.pth"), "--coco-path", str(root), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["images"] == 1  # 10% of 10


def test_memprofile_without_a_dataset_says_which_class_count_it_used(tiny_cfg: RunConfig) -> None:
    from detrdoctor.memprofile.plan import resolve_classes

    tiny_cfg.model.num_classes = "auto"
    note = resolve_classes(tiny_cfg, None)
    assert tiny_cfg.model.num_classes == 91 and "COCO's 91" in note
    tiny_cfg.model.num_classes = 7
    assert resolve_classes(tiny_cfg, None) == "" and tiny_cfg.model.num_classes == 7
