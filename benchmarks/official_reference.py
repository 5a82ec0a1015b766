"""facebookresearch/detr's matcher and training step, re-implemented plainly: the baseline our matcher and
trainer are compared against (tests for equal results, benchmarks for speed).

Import as `official_reference` from a benchmark script, or `benchmarks.official_reference` from the tests.
"""

from __future__ import annotations

import math

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


@torch.no_grad()
def official_cost_matrix(
    outputs: dict, targets: list[dict], cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0
) -> Tensor:
    """The official matcher's cost: one [B, Q, all targets of the batch] matrix, cross-image blocks included."""
    bs, num_queries = outputs["pred_logits"].shape[:2]
    out_prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
    out_bbox = outputs["pred_boxes"].flatten(0, 1)
    tgt_ids = torch.cat([t["labels"] for t in targets])
    tgt_bbox = torch.cat([t["boxes"] for t in targets])
    giou = generalized_box_iou(box_convert(out_bbox, "cxcywh", "xyxy"), box_convert(tgt_bbox, "cxcywh", "xyxy"))
    cost = cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1) + cost_class * -out_prob[:, tgt_ids] + cost_giou * -giou
    return cost.view(bs, num_queries, -1)


def official_match(
    outputs: dict, targets: list[dict], cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0
) -> list[tuple[Tensor, Tensor]]:
    """The official assignment: the whole-batch matrix to the host, then LSA on each image's own block."""
    cost = official_cost_matrix(outputs, targets, cost_class, cost_bbox, cost_giou).cpu()
    blocks = cost.split([len(t["boxes"]) for t in targets], -1)
    return [
        tuple(torch.as_tensor(x, dtype=torch.int64) for x in linear_sum_assignment(c[i])) for i, c in enumerate(blocks)
    ]


class OfficialMatcher(nn.Module):
    """Drop-in for detr.HungarianMatcher in SetCriterion that matches as the official code does: each
    decoder layer on its own, one whole-batch cost matrix and one host transfer per layer."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        self.costs = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou}

    def match_layers(self, layers: list[dict], targets: list[dict]) -> list[list[tuple[Tensor, Tensor]]]:
        return [official_match(layer, targets, **self.costs) for layer in layers]


def official_train_step(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    mask: Tensor,
    targets: list[dict],
    max_norm: float,
) -> float:
    """One step of the official `train_one_epoch`: weighted loss, every logged loss read to the host (its
    MetricLogger), the finite-loss check, zero_grad, backward, `clip_grad_norm_`, optimizer step."""
    outputs = model(images, mask)
    loss_dict = criterion(outputs, targets)
    weight_dict = criterion.weight_dict
    losses = sum(loss_dict[k] * weight_dict[k] for k in loss_dict if k in weight_dict)
    loss_value = losses.item()
    logged = {k: v.item() for k, v in loss_dict.items()}
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value}, stopping training ({logged})")
    optimizer.zero_grad()
    losses.backward()
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return loss_value
