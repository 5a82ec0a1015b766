"""TIDE's error decomposition (Bolya et al., ECCV 2020): the AP50 each kind of mistake costs, on its own.

Every false positive of COCOeval's matching at IoU 0.5 gets one type from its overlaps with the objects of
its image (IoU_fg = 0.5, IoU_bg = 0.1), checked in this order:

- localisation: it overlaps an object of its class at IoU_bg ≤ IoU < IoU_fg;
- classification: it overlaps an object of another class at IoU ≥ IoU_fg;
- duplicate: it overlaps an object of its class at IoU ≥ IoU_fg that a higher-scored box already found;
- background: it overlaps no object at IoU ≥ IoU_bg;
- both: what is left: it overlaps an object of another class at IoU_bg ≤ IoU < IoU_fg.

An object no box found and no localisation or classification error points at is missed. Each type is then
fixed alone and the detections re-scored by COCOeval at IoU 0.5: a mislocalised (mislabelled) box takes the
box (and class) of its object, the highest-scored such box per object, the others and every duplicate,
background and "both" box are dropped; missed objects leave the ground truth. The AP50 gained is the type's
dAP50. The implementation is ours, on COCOeval's matching: tidecv (the authors' package, last released 2020)
runs on NumPy 2 but drops boxes on images without objects (its AP50 then differs from pycocotools'), and lets
a classification fix of an object suppress its localisation fix (one best box per object over both types), so
those two types are not fixed alone; on the rest its counts and dAP50 agree with these.
"""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np

from detr.engine.coco_matching import CocoMatching, box_iou, grouped_by_image, object_boxes
from detr.engine.evaluate import accumulated_cocoeval, coco_with_annotations, mean_defined

FOREGROUND_IOU = 0.5
BACKGROUND_IOU = 0.1
ERROR_TYPES = ("classification", "localisation", "both", "duplicate", "background", "missed")


class ErrorCost(TypedDict):
    """How many boxes (objects, for "missed") made one kind of mistake, and the AP50 fixing them all gains."""

    count: int
    dAP50: float


def ap50(coco: Any, detections: np.ndarray, image_ids: list[int]) -> float:
    """COCOeval's AP50 (area "all", 100 detections), evaluated at that IoU alone: the headline AP50 exactly."""
    if not len(detections):
        return 0.0
    coco_eval = accumulated_cocoeval(coco, detections, image_ids, [FOREGROUND_IOU], area_all_only=True)
    return mean_defined(coco_eval.eval["precision"][0, :, :, 0, -1]) or 0.0


def classify_false_positives(
    coco: Any, detections: np.ndarray, matching: CocoMatching
) -> tuple[dict[int, tuple[str, int]], np.ndarray]:
    """The error type of each false positive, the object a localisation or classification fix gives it, and the
    objects missed.

    Returns ({index into matching's detections: (type, annotation id or 0)}, annotation ids of missed objects).
    """
    if not np.isclose(matching.iou, FOREGROUND_IOU):
        raise ValueError(f"TIDE's errors are defined on the matching at IoU {FOREGROUND_IOU}, not {matching.iou}")
    errors: dict[int, tuple[str, int]] = {}
    objects_of = grouped_by_image(np.arange(len(matching.gt_id)), matching.gt_image)
    no_objects = np.zeros(0, dtype=np.int64)
    for image_id, boxes in grouped_by_image(np.flatnonzero(matching.det_false), matching.det_image).items():
        objects = objects_of.get(image_id, no_objects)
        if not len(objects):
            errors.update(dict.fromkeys(boxes.tolist(), ("background", 0)))
            continue
        ious = box_iou(detections[matching.det_row[boxes], 1:5], object_boxes(coco, matching.gt_id[objects]))
        same = matching.det_category[boxes][:, None] == matching.gt_category[objects][None, :]
        own, other = np.where(same, ious, 0.0), np.where(same, 0.0, ious)
        own_best, other_best = own.argmax(1), other.argmax(1)
        own_iou, other_iou = own.max(1), other.max(1)
        kinds = np.select(  # TIDE's order: the first condition that holds names the error
            [
                (own_iou >= BACKGROUND_IOU) & (own_iou < FOREGROUND_IOU),
                other_iou >= FOREGROUND_IOU,
                own_iou >= FOREGROUND_IOU,  # a free object of its class that close, COCOeval would have matched
                other_iou < BACKGROUND_IOU,
            ],
            ["localisation", "classification", "duplicate", "background"],
            "both",
        )
        targets = np.where(kinds == "localisation", own_best, other_best)
        for box, kind, target in zip(boxes.tolist(), kinds.tolist(), targets.tolist()):
            pointed = kind in ("localisation", "classification")
            errors[box] = (kind, int(matching.gt_id[objects[target]]) if pointed else 0)
    pointed_at = {g for kind, g in errors.values() if kind in ("localisation", "classification")}
    missed = np.array(
        [g for g, m in zip(matching.gt_id.tolist(), matching.gt_matched.tolist()) if not m and g not in pointed_at],
        dtype=np.int64,
    )
    return errors, missed


def error_costs(
    coco: Any, detections: np.ndarray, image_ids: list[int], matching: CocoMatching, base_ap50: float
) -> dict[str, ErrorCost]:
    """TIDE's six error types of `detections` (the rows `matching` was read from): count and dAP50 of each.

    `base_ap50` is the AP50 of the unfixed detections (the headline number); a type with no error costs 0
    without re-scoring.
    """
    errors, missed = classify_false_positives(coco, detections, matching)
    costs: dict[str, ErrorCost] = {}
    for kind in ERROR_TYPES:
        mine = [box for box, (k, _) in errors.items() if k == kind]
        count = len(missed) if kind == "missed" else len(mine)
        if count == 0:
            costs[kind] = {"count": 0, "dAP50": 0.0}
            continue
        if kind == "missed":
            gone = set(missed.tolist())
            kept = [a for a in coco.dataset["annotations"] if a["id"] not in gone]
            fixed_ap50 = ap50(coco_with_annotations(coco, kept), detections, image_ids)
        else:
            fixed_ap50 = ap50(coco, _fixed(coco, detections, matching, errors, kind), image_ids)
        costs[kind] = {"count": count, "dAP50": fixed_ap50 - base_ap50}
    return costs


def _fixed(
    coco: Any, detections: np.ndarray, matching: CocoMatching, errors: dict[int, tuple[str, int]], kind: str
) -> np.ndarray:
    """`detections` with every error of `kind` fixed as TIDE fixes it (see the module's docstring)."""
    fixed = detections.copy()
    dropped: list[int] = []
    taken = set(matching.gt_id[matching.gt_matched].tolist())  # an object already found takes no second box
    mine = sorted((box for box, (k, _) in errors.items() if k == kind), key=lambda box: -matching.det_score[box])
    for box in mine:  # highest score first: the first box pointing at an object becomes its match
        row, target = int(matching.det_row[box]), errors[box][1]
        if kind in ("localisation", "classification") and target not in taken:
            taken.add(target)
            fixed[row, 1:5] = coco.anns[target]["bbox"]
            fixed[row, 6] = coco.anns[target]["category_id"]
        else:
            dropped.append(row)
    return np.delete(fixed, dropped, axis=0)
