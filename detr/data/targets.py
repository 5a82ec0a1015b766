"""COCO annotations → box targets, as the official ConvertCocoPolysToMask does for boxes.

Crowd boxes are dropped, xywh becomes xyxy clamped to the image, boxes left with no area are dropped,
and the raw category ids are the labels. One addition: annotations whose category id is not among the
dataset's categories are dropped too, since they would index past the classifier.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np


def clean_boxes(
    anns: Sequence[dict], height: int, width: int, category_ids: Collection[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(boxes float32 [n,4] xyxy in pixels, labels int64 [n]) of an image's usable annotations."""
    anns = [a for a in anns if not a.get("iscrowd", 0) and a["category_id"] in category_ids]
    boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
    labels = np.asarray([a["category_id"] for a in anns], dtype=np.int64)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def annotation_summary(images: Sequence[dict], anns: Sequence[dict], category_ids: Collection[int]) -> dict:
    """Counts of what `clean_boxes` drops or clamps over a whole annotation file (sizes from the JSON)."""
    sizes = {img["id"]: (img.get("height", 0), img.get("width", 0)) for img in images}
    n = len(anns)
    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=bool, count=n)
    known = np.fromiter((a["category_id"] in category_ids for a in anns), dtype=bool, count=n)
    has_image = np.fromiter((a["image_id"] in sizes for a in anns), dtype=bool, count=n)
    xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    hw = np.asarray([sizes.get(a["image_id"], (0, 0)) for a in anns], dtype=np.float64).reshape(-1, 2)
    degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    x1, y1 = xywh[:, 0], xywh[:, 1]
    x2, y2 = x1 + xywh[:, 2], y1 + xywh[:, 3]
    cx1, cx2 = x1.clip(0, hw[:, 1]), x2.clip(0, hw[:, 1])
    cy1, cy2 = y1.clip(0, hw[:, 0]), y2.clip(0, hw[:, 0])
    # Images without width/height in the JSON cannot be judged here; their boxes count as inside.
    judged = (hw > 0).all(axis=1)
    outside = judged & ~degenerate & ((cx2 <= cx1) | (cy2 <= cy1))
    clamped = judged & ~degenerate & ~outside & ((cx1 != x1) | (cx2 != x2) | (cy1 != y1) | (cy2 != y2))
    usable = ~crowd & known & has_image & ~degenerate & ~outside
    with_boxes = {a["image_id"] for a, ok in zip(anns, usable) if ok}
    return {
        "images": len(images),
        "annotations": n,
        "usable_annotations": int(usable.sum()),
        "crowd": int(crowd.sum()),
        "unknown_category": int((~crowd & ~known).sum()),
        "unknown_image": int((~crowd & known & ~has_image).sum()),
        "degenerate": int((~crowd & known & has_image & degenerate).sum()),
        "outside_image": int((~crowd & known & has_image & outside).sum()),
        "clamped": int((~crowd & known & has_image & clamped).sum()),
        "images_without_annotations": sum(1 for img in images if img["id"] not in with_boxes),
        "max_category_id": max(category_ids, default=0),
    }
