"""The YOLO reader: data.yaml and classes.txt layouts, detect and segment labels, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from format_exports import CLASSES, draw, expected, observed, scene, write_yolo_labels, yolo_classes_txt, yolo_dataset

from detr.config import DataConfig
from detr.data import find_layout
from detr.data.annotations import load_coco
from detr.data.formats import yolo
from detr.errors import DataError


def read_split(root: Path, split: str) -> dict:
    return load_coco(find_layout(DataConfig(coco_path=str(root))).split(split)).dataset


def test_data_yaml_splits_boxes_polygons_and_missing_labels(tmp_path: Path) -> None:
    truth = yolo_dataset(tmp_path)
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.kind == "yolo" and (layout.train.subset, layout.val.subset) == ("train", "val")
    assert layout.train.images == tmp_path and layout.train.format == "yolo"
    assert layout.describe().startswith(f"YOLO dataset at {tmp_path}: train data.yaml [train], val data.yaml [val]")
    train = read_split(tmp_path, "train")
    assert observed(train) == expected(truth["train"])  # the polygon's box, the box past the border, no labels
    assert [c["name"] for c in train["categories"]] == list(CLASSES) and [c["id"] for c in train["categories"]] == [
        1,
        2,
        3,
    ]
    polygon = [a for a in train["annotations"] if a["image_id"] == 2]
    assert polygon and all(len(a["segmentation"][0]) == 6 for a in polygon)
    assert {img["file_name"] for img in train["images"]} == {img.name for img in truth["train"]}
    val = read_split(tmp_path, "val")  # a .txt list with Windows separators
    assert observed(val) == expected(truth["val"])
    assert {img["file_name"] for img in val["images"]} == {img.name for img in truth["val"]}


def test_classes_txt_without_data_yaml(tmp_path: Path) -> None:
    truth = yolo_classes_txt(tmp_path)
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.kind == "yolo" and layout.train.annotations == tmp_path / "classes.txt"
    assert (layout.train.part, layout.val.part) == ("rest", "held_out")
    assert observed(read_split(tmp_path, "train")) == expected(truth)


def roboflow_yolo(root: Path, names: str) -> dict:
    """Roboflow's YOLO export: data.yaml with `train: ../train/images` and a names list."""
    splits = {"train": scene(4, "a_"), "valid": scene(2, "b_")}
    for split, images in splits.items():
        draw(root / split / "images", images)
        write_yolo_labels(root / split / "labels", images)
    (root / "data.yaml").write_text(
        f"train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\nnc: 3\nnames: {names}\n\n"
        "roboflow:\n  workspace: w\n  project: p\n  version: 1\n"
    )
    return splits


def test_roboflow_paths_and_a_names_list(tmp_path: Path) -> None:
    truth = roboflow_yolo(tmp_path, "['cat', 'dog', 'bird']")
    assert observed(read_split(tmp_path, "train")) == expected(truth["train"])
    assert observed(read_split(tmp_path, "val")) == expected(truth["valid"])


def test_pose_labels_give_their_boxes(tmp_path: Path) -> None:
    images = scene(1, "p_")
    draw(tmp_path / "images" / "train", images)
    write_yolo_labels(tmp_path / "labels" / "train", images)
    label = tmp_path / "labels" / "train" / "p_000.txt"
    label.write_text("".join(line + " 0.5 0.5 2 0.6 0.6 1\n" for line in label.read_text().splitlines()))
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nkpt_shape: [2, 3]\nnames: [cat, dog, bird]\n")
    assert observed(read_split(tmp_path, "train")) == expected(images)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("7 0.5 0.5 0.1 0.1", "p_000.txt:2: class 7 is not among the 3 classes of data.yaml"),
        ("0 320 240 50 60", "p_000.txt:2: coordinate 320 is not a fraction of the image size"),
        ("0 0.5 0.5", "p_000.txt:2: 2 numbers after the class"),
        ("cat 0.5 0.5 0.1 0.1", "p_000.txt:2: 'cat 0.5 0.5 0.1 0.1' is not numbers"),
        ("0 nan 0.5 0.1 0.1", "p_000.txt:2: a coordinate is not a finite number"),
    ],
)
def test_a_bad_label_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    images = scene(1, "p_")
    draw(tmp_path / "images" / "train", images)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "p_000.txt").write_text(f"0 0.5 0.5 0.2 0.2\n{line}\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cat, dog, bird]\n")
    with pytest.raises(DataError, match="^" + str(tmp_path / "labels" / "train").replace("\\", "\\\\")) as e:
        read_split(tmp_path, "train")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_labels_slightly_outside_the_image_are_kept_for_training_to_clamp(tmp_path: Path) -> None:
    images = scene(1, "p_")
    draw(tmp_path / "images" / "train", images)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "p_000.txt").write_text("1 1.0 0.5 0.5 0.25\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nnames: {0: cat, 1: dog}\n")
    (ann,) = read_split(tmp_path, "train")["annotations"]
    assert ann["bbox"] == [36.0, 24.0, 24.0, 16.0] and ann["category_id"] == 2  # runs 12 px past the right edge


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: images/train\nnames: [cat\n", "data.yaml:3: not valid YAML"),
        ("train: images/train\nnc: 2\nnames: [cat]\n", "nc = 2 but names lists 1 classes"),
        ("train: nowhere\nnames: [cat]\n", "train: nowhere not found under"),
        ("train: images/train\nnames: [cat, cat]\n", "names lists 'cat' twice"),
    ],
)
def test_a_bad_data_yaml_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    draw(tmp_path / "images" / "train", scene(1, "p_"))
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises(DataError) as e:
        read_split(tmp_path, "train")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_label_path_follows_ultralytics() -> None:
    assert yolo.label_path(Path("/d/images/train/a.b.jpg")) == Path("/d/labels/train/a.b.txt")
    assert yolo.label_path(Path("/images/d/images/x/y.png")) == Path("/images/d/labels/x/y.txt")
    assert yolo.label_path(Path("/d/flat/y.png")) == Path("/d/flat/y.txt")


def test_the_annotation_flags_take_a_yaml_and_its_split_entries(tmp_path: Path) -> None:
    truth = yolo_dataset(tmp_path)
    (tmp_path / "data.yaml").rename(tmp_path / "pets.yml")
    (tmp_path / "other.yaml").write_text("train: x\nnames: [a]\n")  # two dataset files: the flags choose
    cfg = DataConfig(coco_path=str(tmp_path), train_annotations="pets.yml", val_annotations="pets.yml")
    layout = find_layout(cfg)
    assert (layout.train.subset, layout.val.subset, layout.val.part) == ("train", "val", "all")
    assert observed(load_coco(layout.val).dataset) == expected(truth["val"])
    with pytest.raises(DataError, match="several YOLO dataset files"):
        find_layout(DataConfig(coco_path=str(tmp_path)))


def test_yolo_labels_without_class_names_say_what_to_write(tmp_path: Path) -> None:
    images = scene(2, "y_")
    draw(tmp_path / "images", images)
    write_yolo_labels(tmp_path / "labels", images)
    with pytest.raises(DataError, match="without a data.yaml or classes.txt naming the classes"):
        find_layout(DataConfig(coco_path=str(tmp_path)))


def test_sizes_are_as_shown_for_exif_rotated_images(tmp_path: Path) -> None:
    from exports import write_image

    write_image(tmp_path / "images" / "r.jpg", 40, 60, orientation=6)  # stored 40 × 60, shown 60 × 40
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "r.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("cat\n")
    data = read_split(tmp_path, "train")
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (60, 40)
    assert data["annotations"][0]["bbox"] == [15.0, 10.0, 30.0, 20.0]
