"""`export_coco` (what `convert` runs): images placed once, and nothing left behind when it cannot finish."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from format_exports import draw, scene, via_entry

from detr.config import DataConfig
from detr.data.export import export_coco
from detr.errors import DataError


def via_folder(root: Path, count: int) -> list:
    images = scene(count, "v_")
    draw(root, images)
    entries = {f"{img.name}{k}": via_entry(img, img.name) for k, img in enumerate(images)}
    (root / "via.json").write_text(json.dumps(entries))
    return images


def test_an_image_listed_twice_is_placed_once(tmp_path: Path) -> None:
    images = via_folder(tmp_path / "data", 4)
    data = json.loads((tmp_path / "data" / "via.json").read_text())
    data["again"] = via_entry(images[0], images[0].name)  # VIA keeps a second entry for the same file
    (tmp_path / "data" / "via.json").write_text(json.dumps(data))
    summary = export_coco(DataConfig(coco_path=str(tmp_path / "data"), val_fraction=0.25), tmp_path / "out")
    assert summary["splits"]["train"]["images"] + summary["splits"]["val"]["images"] == 5
    assert sum(summary["images"].values()) == 4 and summary["images"]["hard_links"] == 4


def test_missing_images_stop_before_anything_is_written(tmp_path: Path) -> None:
    images = via_folder(tmp_path / "data", 4)
    (tmp_path / "data" / images[0].name).unlink()  # a training image (the third is held out)
    with pytest.raises(DataError, match="1 of 3 train images are missing"):
        export_coco(DataConfig(coco_path=str(tmp_path / "data")), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="missing"):
        export_coco(DataConfig(coco_path=str(tmp_path / "data")), tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []  # an empty OUT given stays, empty


def test_a_failure_midway_removes_what_was_written(tmp_path: Path) -> None:
    via_folder(tmp_path / "data", 4)
    calls = []

    def interrupt(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_coco(DataConfig(coco_path=str(tmp_path / "data")), tmp_path / "out", progress=interrupt)
    assert calls == [1, 2] and not (tmp_path / "out").exists()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "v_000.jpg",
        "v_001.jpg",
        "v_002.jpg",
        "v_003.jpg",
        "via.json",
    ]
