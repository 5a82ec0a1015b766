"""DETR's set prediction loss: match predictions to targets, then supervise the matched pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from detr.box_ops import box_cxcywh_to_xyxy, paired_generalized_box_iou
from detr.matcher import HungarianMatcher, Indices

# optimised, for the last decoder layer and (`_i`) each earlier one
LOSS_TERMS: tuple[Literal["loss_ce", "loss_bbox", "loss_giou"], ...] = ("loss_ce", "loss_bbox", "loss_giou")
# logged for the last layer, never optimised
LOGGED_METRICS: tuple[Literal["class_error", "cardinality_error"], ...] = ("class_error", "cardinality_error")


class SetCriterion(nn.Module):
    """The losses of the official SetCriterion: labels (loss_ce, class_error), boxes (loss_bbox, loss_giou)
    and cardinality (cardinality_error), for the last decoder layer and, suffixed `_i`, every earlier one.

    class_error and cardinality_error are logged, never optimised. Losses are computed in float32 with
    autocast off, whatever precision the model ran in.
    """

    empty_weight: Tensor  # a registered buffer

    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: dict[str, float], eos_coef: float):
        super().__init__()
        self.loss_terms = LOSS_TERMS
        self.logged_terms = LOSS_TERMS + LOGGED_METRICS  # what a step record carries
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(
        self, outputs: dict, targets: Sequence[dict], batch_targets: Sequence[dict] | None = None
    ) -> dict[str, Tensor]:
        """outputs as the model returns them; targets [{'labels' [n], 'boxes' [n, 4] cxcywh}] per image.

        `batch_targets`: the targets of the whole batch when `targets` are one micro-batch of it (gradient
        accumulation); every term is then scaled by the micro-batch's share of its normaliser (see
        `micro_batch_shares`), so that the micro-batches' losses, and their gradients, sum to the batch's.
        """
        losses = self._losses(outputs, targets)
        if batch_targets is None:
            return losses
        num_queries = outputs["pred_logits"].shape[1]
        device = outputs["pred_logits"].device
        shares = self.micro_batch_shares(targets, batch_targets, num_queries, device)
        return {k: v * shares[_term_of(k)] for k, v in losses.items()}

    def normalisers(self, targets: Sequence[dict], num_queries: int, device: torch.device) -> dict[str, float]:
        """What each term of these targets' loss is an average over, as forward computes it.

        loss_ce is cross-entropy weighted by class (eos_coef for "no object"), and a weighted mean divides by
        the weights' sum: each image has min(n, Q) matched queries of weight 1 and the other Q − min(n, Q)
        weigh eos_coef. loss_bbox and loss_giou divide by the box count (averaged over ranks, at least 1:
        `_num_boxes`); class_error is a share of the matched queries, cardinality_error a mean over images.
        """
        matched = sum(min(len(t["labels"]), num_queries) for t in targets)
        queries = len(targets) * num_queries
        num_boxes = self._num_boxes(targets, device)
        return {
            "loss_ce": matched + (queries - matched) * self.eos_coef,
            "loss_bbox": num_boxes,
            "loss_giou": num_boxes,
            "class_error": float(max(matched, 1)),
            "cardinality_error": float(max(len(targets), 1)),
        }

    def micro_batch_shares(
        self, targets: Sequence[dict], batch_targets: Sequence[dict], num_queries: int, device: torch.device
    ) -> dict[str, float]:
        """Per term, the micro-batch's normaliser over the batch's: a term is (sum over its items) / normaliser,
        so micro-batch loss × share = (its items' sum) / (the batch's normaliser), and these add up to the
        batch's loss exactly. Weighting micro-batches by their image count instead would over-weigh the boxes
        of a micro-batch with few of them (DETR divides by the batch's box count, not per image)."""
        micro = self.normalisers(targets, num_queries, device)
        whole = self.normalisers(batch_targets, num_queries, device)
        return {term: micro[term] / whole[term] if whole[term] > 0 else 0.0 for term in micro}

    def _losses(self, outputs: dict, targets: Sequence[dict]) -> dict[str, Tensor]:
        aux_outputs = outputs.get("aux_outputs", [])
        main_outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        layer_indices = self.matcher.match_layers([main_outputs, *aux_outputs], targets)
        num_boxes = self._num_boxes(targets, outputs["pred_logits"].device)

        with torch.autocast(device_type=outputs["pred_logits"].device.type, enabled=False):
            losses = self._layer_losses(main_outputs, targets, layer_indices[0], num_boxes, log=True)
            for i, (aux, indices) in enumerate(zip(aux_outputs, layer_indices[1:])):
                aux_losses = self._layer_losses(aux, targets, indices, num_boxes, log=False)
                losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses

    def _layer_losses(
        self, outputs: dict, targets: Sequence[dict], indices: Indices, num_boxes: float, log: bool
    ) -> dict[str, Tensor]:
        losses = self.loss_labels(outputs, targets, indices, log)
        losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        losses.update(self.loss_cardinality(outputs, targets))
        return losses

    def loss_labels(
        self, outputs: dict, targets: Sequence[dict], indices: Indices, log: bool = True
    ) -> dict[str, Tensor]:
        """Cross-entropy over all queries, the unmatched ones towards "no object" (weighted by eos_coef)."""
        src_logits = outputs["pred_logits"].float()
        idx = _src_permutation_idx(indices)
        target_classes_o = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(src_logits.device)
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device)
        target_classes[idx] = target_classes_o

        losses = {"loss_ce": F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight)}
        if log:
            losses["class_error"] = 100 - _top1_accuracy(src_logits[idx], target_classes_o)
        return losses

    @torch.no_grad()
    def loss_cardinality(self, outputs: dict, targets: Sequence[dict]) -> dict[str, Tensor]:
        """|number of queries not predicting "no object" − number of targets|, averaged over the images."""
        pred_logits = outputs["pred_logits"]
        tgt_lengths = torch.as_tensor([len(t["labels"]) for t in targets], device=pred_logits.device)
        card_pred = (pred_logits.argmax(-1) != pred_logits.shape[-1] - 1).sum(1)
        return {"cardinality_error": F.l1_loss(card_pred.float(), tgt_lengths.float())}

    def loss_boxes(
        self, outputs: dict, targets: Sequence[dict], indices: Indices, num_boxes: float
    ) -> dict[str, Tensor]:
        """L1 and 1 − GIoU of the matched (cx, cy, w, h) boxes, each summed and divided by num_boxes."""
        idx = _src_permutation_idx(indices)
        src_boxes = outputs["pred_boxes"][idx].float()
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src_boxes)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none")
        loss_giou = 1 - paired_generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes))
        return {"loss_bbox": loss_bbox.sum() / num_boxes, "loss_giou": loss_giou.sum() / num_boxes}

    @staticmethod
    def _num_boxes(targets: Sequence[dict], device: torch.device) -> float:
        """The number of target boxes per rank, averaged over the ranks, at least 1."""
        num_boxes = sum(len(t["labels"]) for t in targets)
        if not (dist.is_available() and dist.is_initialized()):
            return max(float(num_boxes), 1.0)  # the official value, without a round trip through the device
        total = torch.as_tensor([num_boxes], dtype=torch.float, device=device)
        dist.all_reduce(total)
        return torch.clamp(total / dist.get_world_size(), min=1).item()


def _term_of(key: str) -> str:
    """The term a loss key belongs to: `loss_ce_3` (decoder layer 3) → `loss_ce`."""
    base, _, layer = key.rpartition("_")
    return base if layer.isdigit() else key


def _src_permutation_idx(indices: Indices) -> tuple[Tensor, Tensor]:
    """(image index, query index) of every matched query, for advanced indexing of [B, Q, ...] outputs."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for src, _ in indices])
    return batch_idx, src_idx


@torch.no_grad()
def _top1_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Percentage of rows whose top-scoring class is the label; 0 when there are none (as the official)."""
    if labels.numel() == 0:
        return torch.zeros([], device=logits.device)
    top1 = logits.topk(1, dim=1)[1][:, 0]
    return top1.eq(labels).float().sum(0).mul_(100.0 / labels.numel())
