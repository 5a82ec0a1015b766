"""From DETR's raw outputs to scored, labelled boxes in image coordinates (the COCO API's format)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr.box_ops import box_cxcywh_to_xyxy


class PostProcess(nn.Module):
    """One detection per query: its best real class, that class's probability, and its xyxy box in pixels."""

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: Tensor) -> list[dict[str, Tensor]]:
        """target_sizes [B, 2] as (height, width): the original image sizes for COCO evaluation, or the
        augmented but unpadded sizes to draw on the network's input → [{'scores', 'labels', 'boxes'}] per image."""
        if target_sizes.shape != (len(outputs["pred_logits"]), 2):
            raise ValueError(
                f"target_sizes must be [{len(outputs['pred_logits'])}, 2] (h, w), got {list(target_sizes.shape)}"
            )
        scores, labels, boxes = batched_detections(outputs["pred_logits"], outputs["pred_boxes"], target_sizes)
        return [{"scores": s, "labels": c, "boxes": b} for s, c, b in zip(scores, labels, boxes)]


def batched_detections(logits: Tensor, boxes: Tensor, target_sizes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The whole batch at once, as tensors (what an exported model computes): scores [B, Q], labels [B, Q] and
    xyxy boxes [B, Q, 4] in the pixels of `target_sizes` [B, 2] (height, width)."""
    prob = F.softmax(logits.float(), -1)
    scores, labels = prob[..., :-1].max(-1)  # the last class is "no object"
    img_h, img_w = target_sizes.unbind(1)
    scale_fct = torch.stack([img_w, img_h, img_w, img_h], dim=1)
    return scores, labels, box_cxcywh_to_xyxy(boxes.float()) * scale_fct[:, None, :]
