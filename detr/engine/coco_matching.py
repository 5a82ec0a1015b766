"""COCOeval's own matching of detections to objects, read back per detection and per object.

Precision, recall, the confusion matrix and the error decomposition all start from the pairs COCOeval made
when it scored AP, so none of them can disagree with the headline numbers about which box found which object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CocoMatching:
    """The matching at one IoU threshold over area "all" and COCOeval's largest detection count.

    Detections are those COCOeval scored (at most that count per image and category), as rows of the
    detections it was given; objects are the non-crowd annotations of the scored images. A detection that
    matched a crowd region is `det_ignored`: COCOeval counts it neither right nor wrong.
    """

    iou: float
    category_ids: tuple[int, ...]
    det_row: np.ndarray  # int: row in the detections array
    det_score: np.ndarray
    det_category: np.ndarray  # int
    det_image: np.ndarray  # int
    det_gt: np.ndarray  # int: id of the annotation it matched, 0 for none
    det_ignored: np.ndarray  # bool
    gt_id: np.ndarray  # int: annotation id
    gt_category: np.ndarray  # int
    gt_image: np.ndarray  # int
    gt_matched: np.ndarray  # bool

    @property
    def det_true(self) -> np.ndarray:
        """Detections that found an object of their class (COCOeval's true positives)."""
        return (self.det_gt > 0) & ~self.det_ignored

    @property
    def det_false(self) -> np.ndarray:
        """Detections COCOeval counts as false positives."""
        return (self.det_gt == 0) & ~self.det_ignored


def coco_matching(coco_eval: Any, iou: float = 0.5) -> CocoMatching:
    """Read the matching at `iou` out of an evaluated COCOeval (bbox, categories used, `iou` among its thresholds)."""
    params = coco_eval.params
    at_iou = np.flatnonzero(np.isclose(params.iouThrs, iou))
    if not len(at_iou):
        raise ValueError(f"the COCOeval was not run at IoU {iou} (its thresholds: {list(params.iouThrs)})")
    t = int(at_iou[0])
    area, images = params.areaRngLbl.index("all"), len(params.imgIds)
    det: dict[str, list] = {k: [] for k in ("row", "score", "category", "image", "gt", "ignored")}
    gt: dict[str, list] = {k: [] for k in ("id", "category", "image", "matched")}
    for k, category_id in enumerate(params.catIds):
        for i, image_id in enumerate(params.imgIds):
            entry = coco_eval.evalImgs[(k * len(params.areaRng) + area) * images + i]
            if entry is None:
                continue
            found = len(entry["dtIds"])
            det["row"].extend(d - 1 for d in entry["dtIds"])  # loadRes numbers result rows from 1
            det["score"].extend(entry["dtScores"])
            det["category"].extend([category_id] * found)
            det["image"].extend([image_id] * found)
            det["gt"].extend(entry["dtMatches"][t].astype(np.int64).tolist())
            det["ignored"].extend(entry["dtIgnore"][t].astype(bool).tolist())
            counted = ~entry["gtIgnore"].astype(bool)
            objects = int(counted.sum())
            gt["id"].extend(np.asarray(entry["gtIds"])[counted].tolist())
            gt["category"].extend([category_id] * objects)
            gt["image"].extend([image_id] * objects)
            gt["matched"].extend((entry["gtMatches"][t][counted] > 0).tolist())
    return CocoMatching(
        iou=float(params.iouThrs[t]),
        category_ids=tuple(int(c) for c in params.catIds),
        det_row=np.array(det["row"], dtype=np.int64),
        det_score=np.array(det["score"], dtype=np.float64),
        det_category=np.array(det["category"], dtype=np.int64),
        det_image=np.array(det["image"], dtype=np.int64),
        det_gt=np.array(det["gt"], dtype=np.int64),
        det_ignored=np.array(det["ignored"], dtype=bool),
        gt_id=np.array(gt["id"], dtype=np.int64),
        gt_category=np.array(gt["category"], dtype=np.int64),
        gt_image=np.array(gt["image"], dtype=np.int64),
        gt_matched=np.array(gt["matched"], dtype=bool),
    )


def grouped_by_image(indices: np.ndarray, images: np.ndarray) -> dict[int, np.ndarray]:
    """`indices` split by the image each belongs to (`images[indices]`), keeping their order within an image:
    one sort for the whole dataset instead of one scan per image."""
    order = indices[np.argsort(images[indices], kind="mergesort")]
    keys, starts = np.unique(images[order], return_index=True)
    return dict(zip(keys.tolist(), np.split(order, starts[1:])))


def box_iou(boxes: np.ndarray, objects: np.ndarray) -> np.ndarray:
    """IoU of xywh `boxes` (N×4) with xywh `objects` (M×4), N×M, computed as COCOeval computes it."""
    from pycocotools import mask

    if not len(boxes) or not len(objects):
        return np.zeros((len(boxes), len(objects)))
    return np.asarray(mask.iou(boxes.tolist(), objects.tolist(), [0] * len(objects)), dtype=np.float64)


def object_boxes(coco: Any, annotation_ids: np.ndarray) -> np.ndarray:
    """The xywh boxes of the given annotations, M×4."""
    return np.array([coco.anns[int(g)]["bbox"] for g in annotation_ids], dtype=np.float64).reshape(-1, 4)
