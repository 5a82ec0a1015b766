"""One split of a dataset, parsed, validated and judged once: what the loader trains on and the doctor counts.

`load_split` is what the dataset (`build_dataset`), the pre-training check (`check_dataset`), the dataset
doctor, triage, evaluate and predict read, so the counts of the `data_summary` event and the doctor's rows
come from the same images, annotations and box fates (`detr.data.targets.box_fates`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from detr.config import DataConfig
from detr.data.annotations import Annotations, load_annotations
from detr.data.layout import Layout, SplitSource, find_layout, split_image_ids
from detr.data.targets import AnnotationSummary, BoxFates, split_fates, summarise
from detr.errors import DataError


@dataclass(frozen=True)
class SkippedImage:
    """A training image left out for holding more objects than `num_queries` ([data] skip_images_over_queries)."""

    image_id: int
    file_name: str
    objects: int


@dataclass(frozen=True)
class SplitData:
    """The images and annotations of one split, in file order, as training or evaluation reads them."""

    name: str  # train | val
    layout: Layout
    source: SplitSource
    parsed: Annotations
    images: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    unknown_image: int  # annotations of image ids the file does not list
    skipped: tuple[SkippedImage, ...]

    @property
    def image_ids(self) -> list[int]:
        return sorted(img["id"] for img in self.images)

    @property
    def categories(self) -> list[dict[str, Any]]:
        return self.parsed.coco.dataset["categories"]

    @property
    def category_ids(self) -> frozenset[int]:
        return frozenset(self.parsed.coco.cats)

    @functools.cached_property
    def fates(self) -> tuple[BoxFates, np.ndarray]:
        """(each annotation's fate, its image's index in `images`)."""
        return split_fates(self.images, self.annotations, self.category_ids)

    def summary(self) -> AnnotationSummary:
        fates, image = self.fates
        return summarise(fates, image, len(self.images), self.category_ids, self.unknown_image)


def load_split(data_cfg: DataConfig, name: str, max_objects: int | None = None) -> SplitData:
    """Split "train" or "val" of `data_cfg`'s dataset; images with more than `max_objects` usable boxes are
    left out (None: none are). DataError in one line when the file is not usable or the split holds no image."""
    layout = find_layout(data_cfg)
    source = layout.split(name)
    parsed = load_annotations(source)
    coco = parsed.coco
    ids = set(split_image_ids(coco.imgs, source.part, layout.val_fraction))
    if not ids:
        raise DataError(
            f"{source.annotations}: the {name} split holds no images (val_fraction = "
            f"{layout.val_fraction}); set [data] val_fraction > 0, or eval_every = 0 to train on all"
        )
    images = [img for img in coco.dataset["images"] if img["id"] in ids]
    annotations = [a for a in coco.dataset["annotations"] if a["image_id"] in ids]
    unknown = (
        0
        if source.part == "held_out"
        else sum(1 for a in coco.dataset["annotations"] if a["image_id"] not in coco.imgs)
    )
    split = SplitData(name, layout, source, parsed, images, annotations, unknown, ())
    if max_objects is None:
        return split
    fates, image = split.fates
    objects = np.bincount(image[fates.usable], minlength=len(images))
    over = {images[k]["id"]: int(objects[k]) for k in np.flatnonzero(objects > max_objects)}
    if not over:
        return split
    skipped = tuple(SkippedImage(i, str(coco.imgs[i]["file_name"]), n) for i, n in over.items())
    if len(over) == len(images):
        raise DataError(
            f"{source.annotations}: every {name} image holds more than {max_objects} objects: "
            "raise num_queries in [model] instead of skipping images"
        )
    return SplitData(
        name,
        layout,
        source,
        parsed,
        [img for img in images if img["id"] not in over],
        [a for a in annotations if a["image_id"] not in over],
        unknown,
        skipped,
    )


def training_objects_limit(num_queries: int, skip_images_over_queries: bool) -> int | None:
    """The `max_objects` of the training split: num_queries when [data] skip_images_over_queries is on."""
    return num_queries if skip_images_over_queries else None


def layout_line(layout: Layout) -> str:
    """`Layout.describe` plus what loading its files changed (e.g. Windows separators), for files that load."""
    notes: list[str] = []
    for source in dict.fromkeys((layout.train, layout.val)):
        try:
            notes += load_annotations(source).notes
        except DataError:
            continue  # the split's own load names what is wrong with it
    return layout.describe() + "".join(f"; {note}" for note in dict.fromkeys(notes))
