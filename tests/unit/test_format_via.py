"""The VIA 2 reader: project files and JSON exports, the class attribute, region shapes, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from format_exports import draw, expected, observed, scene, via_entry, via_project

from detr.config import DataConfig
from detr.data import find_layout
from detr.data.annotations import load_coco
from detr.errors import DataError


def read_split(root: Path, split: str) -> dict:
    return load_coco(find_layout(DataConfig(coco_path=str(root))).split(split)).dataset


def test_balloon_layout_class_attribute_and_shapes(tmp_path: Path) -> None:
    truth = via_project(tmp_path)
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.kind == "via" and layout.train.images == tmp_path / "train"
    assert "class from region attribute 'type'" in layout.describe()
    train, val = read_split(tmp_path, "train"), read_split(tmp_path, "val")
    assert observed(train) == expected(truth["train"])  # polygon, circle, no regions, a Windows file name
    assert observed(val) == expected(truth["val"])  # VIA 1's regions keyed "0", "1"
    assert (
        train["categories"]
        == val["categories"]
        == [{"id": 1, "name": "bird"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "dog"}]
    )
    assert train["images"][4]["file_name"] == "balloon_004.jpg"


def single(root: Path, regions: list, name: str = "via_export_json.json") -> Path:
    images = scene(1, "v_")
    draw(root, images)
    entry = via_entry(images[0], images[0].name)
    entry["regions"] = regions
    path = root / name
    path.write_text(json.dumps({"v_000.jpg123": entry}))
    return path


def rect(attributes: dict) -> dict:
    return {
        "shape_attributes": {"name": "rect", "x": 1, "y": 2, "width": 3, "height": 4},
        "region_attributes": attributes,
    }


def test_without_attributes_one_class_and_a_held_out_share(tmp_path: Path) -> None:
    single(tmp_path, [rect({}), rect({})])
    layout = find_layout(DataConfig(coco_path=str(tmp_path)))
    assert layout.val.part == "held_out" and "one class 'object'" in layout.describe()
    data = read_split(tmp_path, "train")
    assert data["categories"] == [{"id": 1, "name": "object"}] and len(data["annotations"]) == 2


def test_checkbox_values_and_the_preferred_attribute_name(tmp_path: Path) -> None:
    single(tmp_path, [rect({"zone": "a", "Label": {"car": True, "bus": False}}), rect({"zone": "b", "Label": "bus"})])
    data = read_split(tmp_path, "train")
    assert [c["name"] for c in data["categories"]] == ["bus", "car"]
    assert [a["category_id"] for a in data["annotations"]] == [2, 1]


@pytest.mark.parametrize(
    ("regions", "message"),
    [
        (
            [rect({"type": "cat"}), rect({"colour": "red"})],
            "v_000.jpg region 2: no single value of the class attribute 'type'",
        ),
        (
            [{"shape_attributes": {"name": "rect", "x": "1"}, "region_attributes": {}}],
            "region 1: coordinates must be numbers",
        ),
        (
            [{"shape_attributes": {"name": "polygon", "all_points_x": [1, 2]}}],
            "a polygon needs all_points_x and all_points_y",
        ),
        ([{"shape_attributes": {"name": "blob"}}], "shape 'blob' is not one detrdoctor reads"),
    ],
)
def test_a_bad_region_is_one_line(tmp_path: Path, regions: list, message: str) -> None:
    path = single(tmp_path, regions)
    with pytest.raises(DataError) as e:
        read_split(tmp_path, "train")
    assert str(e.value).startswith(str(path)) and message in str(e.value)


def test_a_via3_project_asks_for_a_via2_export(tmp_path: Path) -> None:
    draw(tmp_path, scene(1, "v_"))
    project = {"project": {}, "config": {}, "attribute": {}, "file": {}, "metadata": {}, "view": {}, "_via_": 1}
    (tmp_path / "via3.json").write_text(json.dumps(project))
    with pytest.raises(DataError, match="a VIA 3 project: export it from VIA 2"):
        read_split(tmp_path, "train")
