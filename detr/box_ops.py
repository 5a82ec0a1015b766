"""Box format conversions and the generalized IoU (Rezatofighi et al. 2019) used by the matcher and the loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_convert


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(center x, center y, width, height) → (x0, y0, x1, y1), over the last dimension."""
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU of xyxy boxes [..., N, 4] and [..., M, 4] → [..., N, M]; leading dimensions broadcast."""
    corners1 = [c[..., :, None] for c in _corners(boxes1)]
    corners2 = [c[..., None, :] for c in _corners(boxes2)]
    return _generalized_iou(corners1, corners2)


def paired_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Elementwise GIoU of xyxy boxes [..., 4] and [..., 4] → [...] (the diagonal of the pairwise matrix)."""
    return _generalized_iou(_corners(boxes1), _corners(boxes2))


def _corners(boxes: Tensor) -> tuple[Tensor, ...]:
    # x0, y0, x1, y1 as contiguous tensors: elementwise ops over them run far faster than over [..., 2] slices.
    return boxes.movedim(-1, 0).contiguous().unbind(0)


def _generalized_iou(corners1: Sequence[Tensor], corners2: Sequence[Tensor]) -> Tensor:
    """GIoU from broadcasting (x0, y0, x1, y1) tensors.

    The arithmetic is the official DETR one, operation for operation and without an epsilon, so that
    matching costs and losses are bit-identical to it. Degenerate boxes (x1 < x0) give inf/nan;
    predictions never are, as they come from a sigmoid of (cx, cy, w, h).
    """
    x0a, y0a, x1a, y1a = corners1
    x0b, y0b, x1b, y1b = corners2
    area1 = (x1a - x0a) * (y1a - y0a)
    area2 = (x1b - x0b) * (y1b - y0b)
    inter_w = (torch.minimum(x1a, x1b) - torch.maximum(x0a, x0b)).clamp(min=0)
    inter_h = (torch.minimum(y1a, y1b) - torch.maximum(y0a, y0b)).clamp(min=0)
    inter = inter_w * inter_h
    union = area1 + area2 - inter
    iou = inter / union
    hull_w = (torch.maximum(x1a, x1b) - torch.minimum(x0a, x0b)).clamp(min=0)
    hull_h = (torch.maximum(y1a, y1b) - torch.minimum(y0a, y0b)).clamp(min=0)
    hull = hull_w * hull_h
    return iou - (hull - union) / hull
