"""COCO annotations → box targets, as the official ConvertCocoPolysToMask does for boxes.

Crowd boxes are dropped, xywh becomes xyxy clamped to the image, boxes left with no area are dropped,
and the raw category ids are the labels. One addition: annotations whose category id is not among the
dataset's categories are dropped too, since they would index past the classifier.

`box_fates` is the one judgement of what happens to each box: the training samples (`clean_boxes`, with
the decoded image's size) and the dataset's counts (`annotation_summary`, the doctor; with the sizes the
annotation file gives) both read it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np


@dataclass(frozen=True)
class BoxFates:
    """What training does with each of n annotations (bool [n] masks, each box in exactly one of usable,
    crowd, unknown_category, degenerate, outside), plus the clamped xyxy boxes."""

    xyxy: np.ndarray  # float64 [n, 4], clamped to the image where its size is known
    crowd: np.ndarray
    unknown_category: np.ndarray
    degenerate: np.ndarray  # width or height ≤ 0 as written
    outside: np.ndarray  # wholly outside its image: nothing left after clamping
    clamped: np.ndarray  # usable, but cut at the border (or at 0 where the size is unknown)
    usable: np.ndarray


def box_fates(
    xywh: np.ndarray, crowd: np.ndarray, known: np.ndarray, width: np.ndarray, height: np.ndarray
) -> BoxFates:
    """The fate of boxes [n, 4] xywh in images of `width`, `height` [n] (nan: size unknown, nothing clamped)."""
    xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    x1, y1 = xywh[:, 0], xywh[:, 1]
    x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
    sized = ~(np.isnan(width) | np.isnan(height))
    w, h = np.where(sized, width, np.inf), np.where(sized, height, np.inf)
    xyxy = np.stack([x1.clip(0, w), y1.clip(0, h), x2.clip(0, w), y2.clip(0, h)], axis=1)
    dropped = crowd | ~known
    degenerate = ~dropped & ((xywh[:, 2] <= 0) | (xywh[:, 3] <= 0))
    empty = (xyxy[:, 2] <= xyxy[:, 0]) | (xyxy[:, 3] <= xyxy[:, 1])
    outside = ~dropped & ~degenerate & empty
    usable = ~dropped & ~degenerate & ~outside
    clamped = usable & np.any(xyxy != np.stack([x1, y1, x2, y2], axis=1), axis=1)
    return BoxFates(xyxy, crowd, ~crowd & ~known, degenerate, outside, clamped, usable)


def clean_boxes(
    anns: Sequence[dict], height: int, width: int, category_ids: Collection[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(boxes float32 [n,4] xyxy in pixels, labels int64 [n]) of an image's usable annotations."""
    n = len(anns)
    fates = box_fates(
        np.asarray([a["bbox"] for a in anns], dtype=np.float64),
        np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=bool, count=n),
        np.fromiter((a["category_id"] in category_ids for a in anns), dtype=bool, count=n),
        np.full(n, float(width)),
        np.full(n, float(height)),
    )
    labels = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
    return fates.xyxy[fates.usable].astype(np.float32), labels[fates.usable]


class AnnotationSummary(TypedDict):
    """The counts of `annotation_summary`: what training keeps, drops and clamps (`data_summary` events)."""

    images: int
    annotations: int
    usable_annotations: int
    crowd: int
    unknown_category: int
    unknown_image: int
    degenerate: int
    outside_image: int
    clamped: int
    images_without_annotations: int
    max_category_id: int


def image_sizes(images: Sequence[dict[str, Any]]) -> np.ndarray:
    """float64 [n, 2] width, height of each image as the annotation file gives it (nan when not given)."""
    sizes = [(img.get("width"), img.get("height")) for img in images]
    return np.array([s if s[0] and s[1] else (np.nan, np.nan) for s in sizes], dtype=np.float64).reshape(-1, 2)


def split_fates(
    images: Sequence[dict], anns: Sequence[dict], category_ids: Collection[int]
) -> tuple[BoxFates, np.ndarray]:
    """(the fates of `anns`, each one's index in `images`) with the sizes from the file; every annotation's
    image must be in `images`."""
    index = {img["id"]: k for k, img in enumerate(images)}
    n = len(anns)
    image = np.fromiter((index[a["image_id"]] for a in anns), dtype=np.int64, count=n)
    size = image_sizes(images)[image]
    fates = box_fates(
        np.asarray([a["bbox"] for a in anns], dtype=np.float64),
        np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=bool, count=n),
        np.fromiter((a["category_id"] in category_ids for a in anns), dtype=bool, count=n),
        size[:, 0],
        size[:, 1],
    )
    return fates, image


def summarise(
    fates: BoxFates, image: np.ndarray, images: int, category_ids: Collection[int], unknown_image: int = 0
) -> AnnotationSummary:
    """The counts of a split's box fates (`image`: each annotation's image index, of `images`);
    `unknown_image` annotations name an image the file does not list (they are never loaded)."""
    with_boxes = np.zeros(images, dtype=bool)
    with_boxes[image[fates.usable]] = True
    return {
        "images": images,
        "annotations": len(image) + unknown_image,
        "usable_annotations": int(fates.usable.sum()),
        "crowd": int(fates.crowd.sum()),
        "unknown_category": int(fates.unknown_category.sum()),
        "unknown_image": unknown_image,
        "degenerate": int(fates.degenerate.sum()),
        "outside_image": int(fates.outside.sum()),
        "clamped": int(fates.clamped.sum()),
        "images_without_annotations": int((~with_boxes).sum()),
        "max_category_id": max(category_ids, default=0),
    }
