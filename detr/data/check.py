"""The pre-training dataset check: layout, annotation file, every image present, and what gets dropped."""

from __future__ import annotations

import os
from pathlib import Path

from detr.config import DataConfig
from detr.data.annotations import load_source
from detr.data.layout import find_layout, split_image_ids
from detr.data.targets import annotation_summary
from detr.errors import DataError

SHOWN = 3  # missing file names quoted in the error


def missing_images(image_dir: Path, file_names: list[str]) -> list[str]:
    """The file names absent from image_dir: one directory listing, a stat only for nested names."""
    with os.scandir(image_dir) as entries:
        present = {e.name for e in entries}
    return [n for n in file_names if n not in present and ("/" not in n or not (image_dir / n).is_file())]


def check_dataset(data_cfg: DataConfig, split: str) -> dict:
    """Validate split "train" or "val" before training; DataError with one line naming what is wrong.

    Returns the summary of `annotation_summary` (counts of crowd, degenerate, outside-image, clamped and
    unknown-category annotations, images without annotations, max category id) plus the paths.
    """
    layout = find_layout(data_cfg)
    source = layout.split(split)
    image_dir, ann_file = source.images, source.annotations
    coco = load_source(source)
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    ids = set(split_image_ids(coco.imgs, source.part, layout.val_fraction))
    images = [img for img in coco.dataset["images"] if img["id"] in ids]
    missing = missing_images(image_dir, [img["file_name"] for img in images])
    if missing:
        raise DataError(
            f"{image_dir}: {len(missing)} of {len(images)} images listed in {ann_file.name} are missing "
            f"(first: {', '.join(missing[:SHOWN])})"
        )
    anns = [ann for ann in coco.dataset["annotations"] if ann["image_id"] in ids]
    summary = annotation_summary(images, anns, frozenset(coco.cats))
    summary.update(
        split=split,
        root=str(layout.root),
        image_dir=str(image_dir),
        annotation_file=str(ann_file),
        categories=len(coco.cats),
        layout=layout.kind,
        layout_description=layout.describe(),
    )
    return summary
