"""COCO box AP through pycocotools' COCOeval, gathered over distributed ranks."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from detr.engine.distributed import all_gather_objects, is_main_process
from detr.engine.metrics import BoxStats

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def accumulated_cocoeval(
    coco: Any,
    detections: np.ndarray,
    image_ids: list[int],
    iou_thresholds: Sequence[float] | None = None,
    area_all_only: bool = False,
) -> Any:
    """COCOeval of box detections (rows [image_id, x, y, w, h, score, category_id]), evaluated and accumulated,
    over `image_ids` and at `iou_thresholds` (default: COCO's 0.50:0.95); `area_all_only` skips the small,
    medium and large passes (a quarter of the work, for re-scoring where only area "all" is read)."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress unconditionally
        coco_eval = COCOeval(coco, coco.loadRes(detections), iouType="bbox")
        coco_eval.params.imgIds = sorted(set(image_ids))
        if iou_thresholds is not None:
            coco_eval.params.iouThrs = np.array(iou_thresholds)
        if area_all_only:
            at = coco_eval.params.areaRngLbl.index("all")
            coco_eval.params.areaRng = [coco_eval.params.areaRng[at]]
            coco_eval.params.areaRngLbl = ["all"]
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def coco_with_annotations(
    coco: Any, annotations: list[dict[str, Any]], categories: list[dict[str, Any]] | None = None
) -> Any:
    """A new COCO of `coco`'s images with `annotations` (and `categories`, default its own): re-scoring against
    altered ground truth never touches `coco`, which may be a shared cached object."""
    from pycocotools.coco import COCO

    altered = COCO()
    altered.dataset = {**coco.dataset, "annotations": annotations}
    if categories is not None:
        altered.dataset["categories"] = categories
    with contextlib.redirect_stdout(io.StringIO()):
        altered.createIndex()
    return altered


def coco_box_stats(coco: Any, detections: np.ndarray, image_ids: list[int]) -> BoxStats:
    """COCOeval box metrics for detections given as rows [image_id, x, y, w, h, score, category_id].

    COCOeval reports -1 where a metric is undefined (no ground truth of that size); we report None.
    """
    if len(detections) == 0:
        return _box_stats(0.0 for _ in STAT_NAMES)
    return summary_stats(accumulated_cocoeval(coco, detections, image_ids))


def summary_stats(coco_eval: Any) -> BoxStats:
    """The headline metrics (STAT_NAMES) of an accumulated COCOeval, None where undefined."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.summarize()
    return _box_stats(float(v) if v >= 0 else None for v in coco_eval.stats[:6])


def _box_stats(values: Iterable[float | None]) -> BoxStats:
    # BoxStats lists STAT_NAMES: a TypedDict cannot be built from a loop over its keys
    return cast(BoxStats, dict(zip(STAT_NAMES, values)))


def per_class_ap(coco_eval: Any, names: Mapping[int, str]) -> list[dict[str, Any]]:
    """AP (IoU 0.50:0.95) and AP50 of each category of an accumulated COCOeval, as [{"id", "name", "AP", "AP50"}].

    Read from COCOeval's own precision array [IoU, recall, category, area, max detections] exactly as its
    summary reads the all-category numbers (area "all", 100 detections), so the two cannot disagree; a
    category without ground truth in the scored images has None. `names` maps ids to names (else the id).
    """
    params = coco_eval.params
    precision = coco_eval.eval["precision"][:, :, :, params.areaRngLbl.index("all"), params.maxDets.index(100)]
    at_50 = np.flatnonzero(np.isclose(params.iouThrs, 0.5))
    rows = []
    for k, category_id in enumerate(params.catIds):
        ap = mean_defined(precision[:, :, k])
        ap50 = mean_defined(precision[at_50, :, k]) if len(at_50) else None
        rows.append({"id": int(category_id), "name": names.get(category_id, str(category_id)), "AP": ap, "AP50": ap50})
    return rows


def mean_defined(values: np.ndarray) -> float | None:
    """The mean over entries COCOeval defined (-1 marks "no ground truth"), as its summary computes it."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def detections_as_rows(targets: list[dict[str, Any]], results: list[dict[str, torch.Tensor]]) -> np.ndarray:
    """Post-processed results (absolute xyxy) → COCO result rows with xywh boxes."""
    rows = []
    for target, result in zip(targets, results):
        boxes = result["boxes"].float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
        image_id = torch.full((len(boxes), 1), float(int(target["image_id"])))
        rows.append(
            torch.cat(
                [image_id, xywh, result["scores"].float().cpu()[:, None], result["labels"].float().cpu()[:, None]],
                dim=1,
            )
        )
    return torch.cat(rows).numpy().astype(np.float64) if rows else np.zeros((0, 7))


# A detector maps a padded batch (images [B, 3, H, W], mask [B, H, W]) and the sizes to scale its boxes to
# ([B, 2], height, width) to post-processed detections per image: a PyTorch model with its post-processor,
# or an exported file run elsewhere (detr.onnx_runtime).
Detector = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], list[dict[str, torch.Tensor]]]


def torch_detector(model: nn.Module, postprocessor: nn.Module, amp_dtype: torch.dtype | None = None) -> Detector:
    """`model` followed by `postprocessor`, under autocast when `amp_dtype` is given."""

    def detect(images: torch.Tensor, mask: torch.Tensor, sizes: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = model(images, mask)
        return postprocessor(outputs, sizes)

    return detect


@torch.no_grad()
def predict_detections(
    model: nn.Module,
    postprocessor: nn.Module,
    loader: Iterable,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Run the model over `loader`: COCO result rows and the image ids scored, gathered over ranks.

    The main process gets every rank's detections, each image once; the other ranks get none.
    """
    was_training = model.training
    model.eval()
    try:
        return detect_all(torch_detector(model, postprocessor, amp_dtype), loader, device)
    finally:
        model.train(was_training)


@torch.no_grad()
def detect_all(detector: Detector, loader: Iterable, device: torch.device) -> tuple[np.ndarray, list[int]]:
    """Run `detector` over `loader`'s (images, mask, targets) batches, scaled to each image's original size: COCO
    result rows and the image ids scored, gathered over ranks (the main process gets them all, the others none)."""
    rows: list[np.ndarray] = []
    image_ids: list[int] = []
    for images, mask, targets in loader:
        if not targets:  # every image of the batch was unreadable (detr.data.files.collate_readable)
            continue
        images, mask = images.to(device, non_blocking=True), mask.to(device, non_blocking=True)
        orig_sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        rows.append(detections_as_rows(targets, detector(images, mask, orig_sizes)))
        image_ids.extend(int(t["image_id"]) for t in targets)
    gathered = all_gather_objects((np.concatenate(rows) if rows else np.zeros((0, 7)), image_ids))
    if not is_main_process():
        return np.zeros((0, 7)), []
    # A distributed sampler repeats a few images to even out the ranks: score each image once.
    seen: set[int] = set()
    kept = []
    for rank_rows, rank_ids in gathered:
        new_ids = set(rank_ids) - seen
        kept.append(rank_rows[np.isin(rank_rows[:, 0], list(new_ids))])
        seen |= new_ids
    return np.concatenate(kept), sorted(seen)


def evaluate_coco(
    model: nn.Module,
    postprocessor: nn.Module,
    loader: Iterable,
    coco: Any,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> BoxStats:
    """Run the model over `loader` and score it against `coco`; every rank returns the same metrics."""
    detections, image_ids = predict_detections(model, postprocessor, loader, device, amp_dtype)
    stats = coco_box_stats(coco, detections, image_ids) if is_main_process() else None
    return all_gather_objects(stats)[0]  # the main process's
