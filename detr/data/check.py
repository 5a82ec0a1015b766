"""The pre-training dataset check: layout, annotation file, every image present, and what gets dropped."""

from __future__ import annotations

import os
from pathlib import Path

from detr.config import DataConfig
from detr.data.split import SplitData, load_split
from detr.data.targets import AnnotationSummary
from detr.errors import DataError

SHOWN = 3  # missing file names quoted in the error


class DataSummary(AnnotationSummary):
    """The `data_summary` event's fields: the split's counts, where it was found, and what was changed."""

    split: str
    root: str
    image_dir: str
    annotation_file: str
    categories: int
    layout: str
    layout_description: str
    skipped_images: int  # over num_queries, with [data] skip_images_over_queries
    notes: list[str]


def missing_images(image_dir: Path, file_names: list[str]) -> list[str]:
    """The file names absent from image_dir: one directory listing, a stat only for nested names."""
    with os.scandir(image_dir) as entries:
        present = {e.name for e in entries}
    return [n for n in file_names if n not in present and ("/" not in n or not (image_dir / n).is_file())]


def check_split(split: SplitData) -> None:
    """DataError naming the image folder when it is absent or lacks images the split lists."""
    image_dir = split.source.images
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: image folder not found")
    missing = missing_images(image_dir, [img["file_name"] for img in split.images])
    if missing:
        raise DataError(
            f"{image_dir}: {len(missing)} of {len(split.images)} images listed in {split.source.annotations.name} "
            f"are missing (first: {', '.join(missing[:SHOWN])})"
        )


def check_dataset(data_cfg: DataConfig, split: str, max_objects: int | None = None) -> DataSummary:
    """Validate split "train" or "val" before training; DataError with one line naming what is wrong.

    Returns the split's counts (`SplitData.summary`: the doctor's too) plus where it was found.
    """
    data = load_split(data_cfg, split, max_objects)
    check_split(data)
    layout = data.layout
    return {
        **data.summary(),
        "split": split,
        "root": str(layout.root),
        "image_dir": str(data.source.images),
        "annotation_file": str(data.source.annotations),
        "categories": len(data.category_ids),
        "layout": layout.kind,
        "layout_description": layout.describe(),
        "skipped_images": len(data.skipped),
        "notes": list(data.parsed.notes),
    }
