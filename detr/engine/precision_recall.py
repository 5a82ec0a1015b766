"""Precision, recall and F1 per class at its best-F1 score threshold, and COCOeval's precision–recall curves.

AP summarises a ranking; a deployed detector keeps the boxes above one score. The threshold that maximises
F1 is the usual single operating point, and the curve shows what any other would give.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

import numpy as np

from detr.engine.coco_matching import CocoMatching

FALLBACK_THRESHOLD = 0.5  # for a class without a best-F1 threshold (no ground truth, or no box ever right)


class OperatingPoint(TypedDict):
    """A class's precision, recall and F1 keeping its boxes scored ≥ threshold (None where undefined)."""

    precision: float | None
    recall: float | None
    f1: float | None
    threshold: float | None


class PrCurves(TypedDict):
    """COCOeval's interpolated precision at its recall points, per category (None: no ground truth)."""

    iou: float
    recall: list[float]
    categories: list[int]
    precision: list[list[float] | None]


def best_f1_points(matching: CocoMatching) -> dict[int, OperatingPoint]:
    """Per category of `matching`: the score threshold with the highest F1, and precision and recall there.

    Thresholds are cut only between distinct scores (a threshold keeps every box scored at least that much);
    of equal F1 the higher threshold wins. A category without ground truth has every value None; one whose
    boxes never find an object has F1 0 and no threshold.
    """
    points: dict[int, OperatingPoint] = {}
    scored = ~matching.det_ignored
    for category_id in matching.category_ids:
        objects = int((matching.gt_category == category_id).sum())
        if objects == 0:
            points[category_id] = {"precision": None, "recall": None, "f1": None, "threshold": None}
            continue
        mine = scored & (matching.det_category == category_id)
        order = np.argsort(-matching.det_score[mine], kind="mergesort")  # as COCOeval's accumulate ranks them
        scores = matching.det_score[mine][order]
        true = (matching.det_gt[mine][order] > 0).astype(np.float64)
        true_so_far = np.cumsum(true)
        if not len(scores) or true_so_far[-1] == 0:
            precision_none = None if not len(scores) else 0.0  # no boxes: no precision to speak of
            points[category_id] = {"precision": precision_none, "recall": 0.0, "f1": 0.0, "threshold": None}
            continue
        cuts = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))  # the last box of each score
        precision = true_so_far[cuts] / (cuts + 1)
        recall = true_so_far[cuts] / objects
        f1 = np.where(true_so_far[cuts] > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
        best = int(np.argmax(f1))
        points[category_id] = {
            "precision": float(precision[best]),
            "recall": float(recall[best]),
            "f1": float(f1[best]),
            "threshold": float(scores[cuts[best]]),
        }
    return points


def score_thresholds(points: Mapping[int, OperatingPoint]) -> dict[int, float]:
    """Each class's best-F1 threshold, FALLBACK_THRESHOLD where it has none."""
    return {c: FALLBACK_THRESHOLD if p["threshold"] is None else p["threshold"] for c, p in points.items()}


def pr_curves(coco_eval: Any, iou: float = 0.5) -> PrCurves:
    """The curves AP at `iou` is the mean area of: COCOeval's precision (area "all", 100 detections)."""
    params = coco_eval.params
    t = int(np.flatnonzero(np.isclose(params.iouThrs, iou))[0])
    precision = coco_eval.eval["precision"][t, :, :, params.areaRngLbl.index("all"), params.maxDets.index(100)]
    return {
        "iou": float(params.iouThrs[t]),
        "recall": [float(r) for r in params.recThrs],
        "categories": [int(c) for c in params.catIds],
        "precision": [None if (p < 0).all() else [float(v) for v in p] for p in precision.T],
    }
