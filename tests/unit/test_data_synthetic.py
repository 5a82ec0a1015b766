"""The synthetic dataset: real COCO (pycocotools, COCOeval AP 1.0 on perfect predictions), reproducible, cached."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detr.config import DataConfig
from detr.data import check_dataset, dataset_root, generate_synthetic_coco, synthetic_categories
from detr.data import root as root_module
from detr.errors import DataError

TINY = dict(train_images=12, val_images=6, image_size=96, seed=3)


@pytest.fixture(scope="module")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_coco(tmp_path_factory.mktemp("synth") / "a", **TINY)


def test_layout_and_categories(tiny_synth: Path) -> None:
    assert len(list((tiny_synth / "train2017").glob("*.jpg"))) == 12
    assert len(list((tiny_synth / "val2017").glob("*.jpg"))) == 6
    cats = synthetic_categories()
    assert [c["id"] for c in cats] == list(range(1, len(cats) + 1)) and len(cats) <= 10
    data = json.loads((tiny_synth / "annotations" / "instances_val2017.json").read_text())
    assert data["categories"] == cats
    assert all(max(img["width"], img["height"]) == 96 for img in data["images"])
    assert {"id", "image_id", "category_id", "bbox", "area", "iscrowd"} <= data["annotations"][0].keys()


def test_perfect_predictions_score_ap_one(tiny_synth: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tiny_synth / "annotations" / "instances_train2017.json"))
        dets = gt.loadRes(
            [
                {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
                for a in gt.dataset["annotations"]
            ]
        )
        evaluator = COCOeval(gt, dets, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert len(gt.dataset["annotations"]) >= 12
    assert evaluator.stats[0] == pytest.approx(1.0) and evaluator.stats[1] == pytest.approx(1.0)


def test_same_seed_gives_identical_bytes(tiny_synth: Path, tmp_path: Path) -> None:
    again = generate_synthetic_coco(tmp_path / "b", **TINY)
    files = sorted(p.relative_to(tiny_synth) for p in tiny_synth.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((tiny_synth / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = generate_synthetic_coco(tmp_path / "c", **{**TINY, "seed": 4})
    assert (other / files[0]).read_bytes() != (tiny_synth / files[0]).read_bytes()


def test_progress_and_refusing_to_overwrite(tmp_path: Path) -> None:
    calls = []
    generate_synthetic_coco(
        tmp_path / "p",
        train_images=3,
        val_images=2,
        image_size=64,
        seed=0,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 5) for i in range(1, 6)]
    with pytest.raises(DataError, match="already exists"):
        generate_synthetic_coco(tmp_path / "p", train_images=1, val_images=1, image_size=64, seed=0)


def small_cfg(**kw) -> DataConfig:
    return DataConfig(synthetic_train_images=4, synthetic_val_images=2, synthetic_image_size=64, **kw)


def test_dataset_root_generates_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETRDOCTOR_CACHE", str(tmp_path / "cache"))
    root = dataset_root(small_cfg(synthetic_seed=11))
    assert root.parent == tmp_path / "cache" / "synthetic" and "seed11" in root.name
    assert check_dataset(small_cfg(synthetic_seed=11), "train")["images"] == 4
    stamp = (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns
    assert dataset_root(small_cfg(synthetic_seed=11)) == root
    assert (root / "annotations" / "instances_train2017.json").stat().st_mtime_ns == stamp
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temp folder left


def test_interrupted_generation_is_never_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETRDOCTOR_CACHE", str(tmp_path / "cache"))

    def interrupted(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dataset_root(small_cfg(), progress=interrupted)
    assert list((tmp_path / "cache" / "synthetic").iterdir()) == []
    assert (dataset_root(small_cfg()) / "val2017").is_dir()


def test_abandoned_temp_folders_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DETRDOCTOR_CACHE", str(tmp_path / "cache"))
    parent = tmp_path / "cache" / "synthetic"
    stale = parent / f".tmp-{root_module.synthetic_key(small_cfg())}-999999999-abcd"
    stale.mkdir(parents=True)
    dataset_root(small_cfg())
    assert not stale.exists()


def test_cache_location_fallbacks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DETRDOCTOR_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert root_module.cache_dir() == tmp_path / "detrdoctor"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert root_module.cache_dir() == Path.home() / ".cache" / "detrdoctor"
