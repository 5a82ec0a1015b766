"""Hungarian matching between DETR's predictions and the ground-truth boxes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from detr.box_ops import box_cxcywh_to_xyxy, generalized_box_iou

Indices = list[tuple[Tensor, Tensor]]


class HungarianMatcher(nn.Module):
    """A one-to-one assignment of queries to targets minimising the paper's matching cost.

    cost = cost_bbox · L1(boxes) − cost_class · p(target class) − cost_giou · GIoU(boxes), the official
    formula value for value, so the assignments are the official ones. The official matcher builds one
    [B·Q, all targets] matrix and keeps only its per-image blocks, a cost that grows with B²; this one
    computes just those blocks, as [B, Q, most targets in an image] in a few batched tensor ops, and
    copies them to the host once for all the layers it matches.
    """

    def __init__(self, cost_class: float = 1, cost_bbox: float = 1, cost_giou: float = 1):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("at least one matching cost must be non-zero")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    def forward(self, outputs: dict, targets: Sequence[dict]) -> Indices:
        """outputs {'pred_logits' [B, Q, C+1], 'pred_boxes' [B, Q, 4]}, targets [{'labels', 'boxes'}] per image
        → per image (query indices, target indices), int64 on the CPU, in increasing query order."""
        return self.match_layers([outputs], targets)[0]

    @torch.no_grad()
    def match_layers(self, layer_outputs: Sequence[dict], targets: Sequence[dict]) -> list[Indices]:
        """The matching of several outputs (the decoder layers) against the same targets, in one host copy."""
        num_layers, batch_size = len(layer_outputs), len(targets)
        sizes = [len(t["boxes"]) for t in targets]
        logits = torch.cat([o["pred_logits"] for o in layer_outputs])  # [L·B, Q, C+1]
        boxes = torch.cat([o["pred_boxes"] for o in layer_outputs])
        # Padding targets become extra columns, cut off again before the assignment.
        tgt_labels = pad_sequence([t["labels"] for t in targets], batch_first=True).to(logits.device, torch.int64)
        tgt_boxes = pad_sequence([t["boxes"] for t in targets], batch_first=True).to(boxes.device)
        costs = self.cost_matrices(logits, boxes, _per_layer(tgt_labels, num_layers), _per_layer(tgt_boxes, num_layers))
        host_costs = costs.cpu().numpy()  # the one device→host transfer
        # A diverged prediction gives NaN costs, which linear_sum_assignment rejects; any assignment will do
        # then, since the loss is non-finite anyway and the gradient watchdog drops that step.
        host_costs = np.nan_to_num(host_costs, nan=1e9, posinf=1e9, neginf=-1e9)
        empty = torch.empty(0, dtype=torch.int64)
        matches = []
        for layer in range(num_layers):
            indices = []
            for image, size in enumerate(sizes):
                if size == 0:
                    indices.append((empty, empty))
                    continue
                query_idx, target_idx = linear_sum_assignment(host_costs[layer * batch_size + image, :, :size])
                indices.append(
                    (torch.from_numpy(query_idx).to(torch.int64), torch.from_numpy(target_idx).to(torch.int64))
                )
            matches.append(indices)
        return matches

    def cost_matrices(self, pred_logits: Tensor, pred_boxes: Tensor, tgt_labels: Tensor, tgt_boxes: Tensor) -> Tensor:
        """[B, Q, C+1] logits, [B, Q, 4] boxes, [B, N] labels, [B, N, 4] boxes → float32 costs [B, Q, N].

        float32 with autocast off whatever the model runs in: in bf16 the costs of near-equal candidates
        tie or swap, and the assignment with them.
        """
        with torch.autocast(device_type=pred_logits.device.type, enabled=False):
            prob = pred_logits.float().softmax(-1)
            pred_boxes = pred_boxes.float()
            tgt_boxes = tgt_boxes.float()
            # −p(class) stands for the NLL: the constant 1 of 1 − p doesn't change the assignment.
            cost_class = -prob.gather(2, tgt_labels[:, None, :].expand(-1, prob.shape[1], -1))
            cost_bbox = torch.cdist(pred_boxes, tgt_boxes, p=1)
            cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
            return self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou


def _per_layer(tensor: Tensor, num_layers: int) -> Tensor:
    """[B, ...] → [L·B, ...], layer-major like the stacked predictions (a view when L = 1)."""
    return tensor.expand(num_layers, *tensor.shape).flatten(0, 1)
