"""The synthetic COCO-format dataset on disk: JPEGs and real instances_*.json files.

Every image draws from its own RNG seeded by (seed, split, index), so the output is byte-identical for
a seed (fixed JPEG quality, sorted JSON) and an image does not depend on how many others are rendered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from detr.data.render import render_image, synthetic_categories
from detr.errors import DataError

GENERATOR_VERSION = 2  # bump when the output changes, so cached datasets are regenerated
JPEG_QUALITY = 90
# Landscape 4:3, portrait 3:4 and square, as (width/height, probability).
ASPECTS = ((4 / 3, 0.55), (3 / 4, 0.3), (1.0, 0.15))


def _image_shape(rng: np.random.Generator, image_size: int) -> tuple[int, int]:
    ratios, probs = zip(*ASPECTS)
    ratio = ratios[rng.choice(len(ratios), p=probs)]
    if ratio >= 1:
        return round(image_size / ratio), image_size
    return image_size, round(image_size * ratio)


def _write_split(
    out: Path, split: str, code: int, count: int, image_size: int, seed: int, tick: Callable[[], None]
) -> None:
    folder = out / f"{split}2017"
    folder.mkdir(parents=True)
    images: list[dict[str, object]] = []
    annotations: list[dict[str, object]] = []
    for i in range(count):
        rng = np.random.default_rng([seed, code, i])
        h, w = _image_shape(rng, image_size)
        pixels, objects = render_image(rng, h, w)
        image_id = i + 1
        name = f"{image_id:012d}.jpg"
        Image.fromarray(pixels).save(folder / name, "JPEG", quality=JPEG_QUALITY)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for obj in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0, **obj})
        tick()
    data = {
        "info": {"description": f"detrdoctor synthetic shapes v{GENERATOR_VERSION}", "version": str(GENERATOR_VERSION)},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": synthetic_categories(),
    }
    (out / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(data, sort_keys=True))


def generate_synthetic_coco(
    out_dir: str | Path,
    *,
    train_images: int,
    val_images: int,
    image_size: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write OUT/{train2017,val2017}/*.jpg and OUT/annotations/instances_{train,val}2017.json.

    `image_size` is the longer side. `progress(done, total)` is called after every image. OUT must
    not exist or be empty (nothing already there is overwritten).
    """
    out = Path(out_dir)
    if train_images < 0 or val_images < 0:
        raise DataError(f"image counts must be ≥ 0, got train {train_images}, val {val_images}")
    if image_size < 32:
        raise DataError(f"synthetic image size must be at least 32 px, got {image_size}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not an empty folder")
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    total, done = train_images + val_images, 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    _write_split(out, "train", 0, train_images, image_size, seed, tick)
    _write_split(out, "val", 1, val_images, image_size, seed, tick)
    return out
