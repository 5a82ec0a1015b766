"""What holds a detector's AP down: wrong labels, loose boxes, spare confident boxes or objects never found.

The same detections are re-scored by COCOeval at looser and stricter IoU thresholds and with every label
replaced by one class, and confident boxes are counted against the objects they should find.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from detr.engine.evaluate import accumulated_cocoeval, coco_with_annotations

IOU_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)
CONFIDENT_SCORE = 0.5


def _ap_and_recall(coco: Any, detections: np.ndarray, image_ids: list[int]) -> tuple[list, list]:
    """Per IoU threshold: AP and the largest recall (all areas, 100 detections), averaged over classes."""
    coco_eval = accumulated_cocoeval(coco, detections, image_ids, IOU_THRESHOLDS)
    precision = coco_eval.eval["precision"][:, :, :, 0, -1]  # thresholds × recall points × classes
    recall = coco_eval.eval["recall"][:, :, 0, -1]  # thresholds × classes
    # -1 marks classes without ground truth; a threshold with none at all has no value.
    ap = [float(p[p > -1].mean()) if (p > -1).any() else None for p in precision]
    ar = [float(r[r > -1].mean()) if (r > -1).any() else None for r in recall]
    return ap, ar


def _class_agnostic(coco: Any) -> Any:
    """A copy of `coco` with every annotation in one class."""
    return coco_with_annotations(
        coco, [{**a, "category_id": 1} for a in coco.dataset["annotations"]], [{"id": 1, "name": "object"}]
    )


def error_breakdown(coco: Any, detections: np.ndarray, image_ids: list[int]) -> dict[str, Any]:
    """Re-score detections (rows [image_id, x, y, w, h, score, category_id]) to show what limits AP.

    Returns AP and recall at each of IOU_THRESHOLDS, AP50 with labels ignored, the number of boxes
    scored ≥ CONFIDENT_SCORE and the number of (non-crowd) objects in the scored images.
    """
    keys = [f"{t:.1f}" for t in IOU_THRESHOLDS]
    ids = set(image_ids)
    objects = sum(1 for a in coco.dataset["annotations"] if a["image_id"] in ids and not a.get("iscrowd", 0))
    result: dict[str, Any] = {
        "objects": objects,
        "confident_score": CONFIDENT_SCORE,
        "confident_detections": int((detections[:, 5] >= CONFIDENT_SCORE).sum()),
    }
    if len(detections) == 0:
        return {
            **result,
            "AP_at_iou": dict.fromkeys(keys, 0.0),
            "recall_at_iou": dict.fromkeys(keys, 0.0),
            "AP50_class_agnostic": 0.0,
        }
    ap, recall = _ap_and_recall(coco, detections, image_ids)
    agnostic = detections.copy()
    agnostic[:, 6] = 1
    agnostic_ap, _ = _ap_and_recall(_class_agnostic(coco), agnostic, image_ids)
    return {
        **result,
        "AP_at_iou": dict(zip(keys, ap)),
        "recall_at_iou": dict(zip(keys, recall)),
        "AP50_class_agnostic": agnostic_ap[IOU_THRESHOLDS.index(0.5)],
    }
