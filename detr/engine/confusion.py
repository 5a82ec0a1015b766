"""The confusion matrix of a detector: which class each object was found as, or background.

The diagonal is COCOeval's own matching (boxes that found an object of their class), so its counts are the
true positives behind precision and recall at the same thresholds. The boxes and objects left over are then
paired across classes, highest score first, each box taking the unpaired object it overlaps most at IoU ≥ 0.5:
those are the mislabelled objects. Whatever is still unpaired is a missed object (column "background") or a
box on background (row "background").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

from detr.engine.coco_matching import CocoMatching, box_iou, grouped_by_image, object_boxes

BACKGROUND = "background"


class Confusion(TypedDict):
    """Rows ground truth, columns prediction, over `categories` (dataset ids, then "background")."""

    categories: list[int | str]
    iou: float
    matrix: list[list[int]]
    thresholds: list[float]  # the score a box of each category needs to count, aligned with categories


def confusion_matrix(
    coco: Any, detections: np.ndarray, matching: CocoMatching, thresholds: Mapping[int, float]
) -> Confusion:
    """Count objects by true class (rows) against the class they were found as (columns), background last.

    `detections` are the rows COCOeval scored in `matching`; a box counts when its score is at least its
    category's entry in `thresholds`. Crowd regions and boxes on them are left out, as COCOeval leaves them.
    """
    index = {c: i for i, c in enumerate(matching.category_ids)}
    background = len(index)
    counts = np.zeros((background + 1, background + 1), dtype=np.int64)
    needed = np.array([thresholds[c] for c in matching.det_category.tolist()], dtype=np.float64)
    kept = ~matching.det_ignored & (matching.det_score >= needed)
    true = kept & (matching.det_gt > 0)
    for category_id in matching.det_category[true].tolist():
        counts[index[category_id], index[category_id]] += 1
    found = set(matching.det_gt[true].tolist())
    leftover_boxes = grouped_by_image(np.flatnonzero(kept & ~true), matching.det_image)
    unfound = np.array([g not in found for g in matching.gt_id.tolist()], dtype=bool)
    leftover_objects = grouped_by_image(np.flatnonzero(unfound), matching.gt_image)
    for image_id in leftover_boxes.keys() | leftover_objects.keys():
        boxes = leftover_boxes.get(image_id, np.zeros(0, dtype=np.int64))
        boxes = boxes[np.argsort(-matching.det_score[boxes], kind="mergesort")]
        objects = leftover_objects.get(image_id, np.zeros(0, dtype=np.int64))
        ious = box_iou(detections[matching.det_row[boxes], 1:5], object_boxes(coco, matching.gt_id[objects]))
        free = np.ones(len(objects), dtype=bool)
        for b, box in enumerate(boxes.tolist()):
            predicted = index[int(matching.det_category[box])]
            overlaps = np.where(free, ious[b], -1.0)
            best = int(np.argmax(overlaps)) if len(objects) else -1
            if best >= 0 and overlaps[best] >= matching.iou:
                free[best] = False
                counts[index[int(matching.gt_category[objects[best]])], predicted] += 1
            else:
                counts[background, predicted] += 1
        for obj in objects[free].tolist():
            counts[index[int(matching.gt_category[obj])], background] += 1
    return {
        "categories": [*matching.category_ids, BACKGROUND],
        "iou": matching.iou,
        "matrix": counts.tolist(),
        "thresholds": [float(thresholds[c]) for c in matching.category_ids],
    }
