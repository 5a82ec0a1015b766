"""The CVAT for images XML 1.1 reader: label order, shapes to boxes, subsets, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from format_exports import cvat_xml, draw, expected, observed, scene

from detr.config import DataConfig
from detr.data import find_layout
from detr.data.annotations import load_coco
from detr.errors import DataError


def read_split(root: Path, split: str) -> dict:
    return load_coco(find_layout(DataConfig(coco_path=str(root))).split(split)).dataset


def test_task_export_boxes_polygons_rotation_and_label_order(tmp_path: Path) -> None:
    truth = cvat_xml(tmp_path)["all"]
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.kind == "cvat-xml" and layout.train.images == tmp_path / "images"
    assert layout.describe().startswith(f"CVAT for images XML at {tmp_path}: train annotations.xml, val = 10%")
    data = read_split(tmp_path, "train")
    assert observed(data) == expected(truth)  # polylines skipped, the rotated box's enclosing box
    assert data["categories"] == [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "bird"}]
    assert data["images"][0]["file_name"] == "batch1/frame_000.jpg"


def test_project_subsets_are_the_splits(tmp_path: Path) -> None:
    truth = cvat_xml(tmp_path, subsets=True)
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert (layout.train.subset, layout.val.subset, layout.val.part) == ("Train", "Validation", "all")
    assert observed(read_split(tmp_path, "train")) == expected(truth["Train"])
    assert observed(read_split(tmp_path, "val")) == expected(truth["Validation"])


def write(root: Path, shapes: str, labels: str = "<label><name>cat</name></label>") -> None:
    draw(root / "images", scene(1, "f_"))
    (root / "annotations.xml").write_text(
        f"<annotations><version>1.1</version><meta><task><labels>{labels}</labels></task></meta>"
        f'<image id="0" name="f_000.jpg" width="48" height="64">{shapes}</image></annotations>'
    )


def test_labels_in_order_of_use_without_meta_labels(tmp_path: Path) -> None:
    write(
        tmp_path, '<box label="b" xtl="1" ytl="1" xbr="5" ybr="5"/><ellipse label="a" cx="9" cy="9" rx="3" ry="2"/>', ""
    )
    data = read_split(tmp_path, "train")
    assert [c["name"] for c in data["categories"]] == ["b", "a"]
    assert [a["bbox"] for a in data["annotations"]] == [[1.0, 1.0, 4.0, 4.0], [6.0, 7.0, 6.0, 4.0]]


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (
            '<box label="dog" xtl="1" ytl="1" xbr="5" ybr="5"/>',
            "<box> 1: label 'dog' is not among the labels in <meta>",
        ),
        ('<polygon label="cat" points="1,1;2;3,3"/>', "<polygon> 1: points must read x,y;x,y"),
        ('<polygon label="cat" points="1,1;2,2"/>', "a polygon needs at least 3 points"),
        ('<box label="cat" xtl="1" ytl="x" xbr="5" ybr="5"/>', "<box> 1: needs numbers in xtl, ytl, xbr, ybr"),
        ('<box label="cat" xtl="1" ytl="1" xbr="5" ybr="5"', "annotations.xml:1: not valid XML"),
    ],
)
def test_a_bad_element_is_one_line_naming_it(tmp_path: Path, shapes: str, message: str) -> None:
    write(tmp_path, shapes)
    with pytest.raises(DataError) as e:
        read_split(tmp_path, "train")
    assert str(e.value).startswith(str(tmp_path / "annotations.xml")) and message in str(e.value)


def test_a_video_export_says_to_export_for_images(tmp_path: Path) -> None:
    draw(tmp_path / "images", scene(1, "f_"))
    (tmp_path / "annotations.xml").write_text(
        '<annotations><version>1.1</version><meta/><track id="0" label="cat"><box frame="0"/></track></annotations>'
    )
    with pytest.raises(DataError, match="export the task as CVAT for images"):
        read_split(tmp_path, "train")


def test_the_annotation_flag_reads_a_cvat_file_by_its_content(tmp_path: Path) -> None:
    truth = cvat_xml(tmp_path / "task")["all"]
    (tmp_path / "task" / "annotations.xml").rename(tmp_path / "task" / "pets.xml")
    (tmp_path / "task" / "other.xml").write_text("<annotations><version>1.1</version><meta/></annotations>")
    cfg = DataConfig(coco_path=str(tmp_path / "task"), train_annotations="pets.xml")
    layout = find_layout(cfg)
    assert layout.kind == "flags" and layout.train.format == "cvat-xml" and layout.val.part == "held_out"
    assert observed(load_coco(layout.train).dataset) == expected(truth)
