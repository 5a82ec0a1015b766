"""The DETR detector (Carion et al. 2020) and `build_model`, which assembles it with its loss and post-processor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr.backbone import Joiner, build_backbone
from detr.config import DETRConfig
from detr.criterion import LOSS_TERMS, SetCriterion
from detr.matcher import HungarianMatcher
from detr.postprocess import PostProcess
from detr.transformer import Transformer

# DETR's parts by module path (attribute names below): the watchdog names parameters, outputs and culprits by
# part, memprofile its memory. query_embed is read by every decoder layer, so it is a part of its own.
MODEL_PARTS = {
    "backbone": "backbone",
    "input_proj": "input_proj",
    "transformer.encoder": "encoder",
    "query_embed": "queries",
    "transformer.decoder": "decoder",
    "class_embed": "class_head",
    "bbox_embed": "box_head",
}
OTHER_PART = "other"  # glue code, the loss, and any module the table does not name


def model_part(name: str) -> str:
    """The part of a parameter, buffer or module by its qualified name (DDP's `module.` prefix ignored)."""
    name = name.removeprefix("module.")
    for path, part in MODEL_PARTS.items():
        if name == path or name.startswith(path + "."):
            return part
    return OTHER_PART


class DETR(nn.Module):
    """Backbone → 1×1 projection → transformer over `num_queries` learned queries → class and box heads."""

    def __init__(
        self, backbone: Joiner, transformer: Transformer, num_classes: int, num_queries: int, aux_loss: bool = True
    ):
        super().__init__()
        self.num_queries = num_queries
        self.transformer = transformer
        hidden_dim = transformer.d_model
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.backbone = backbone
        self.aux_loss = aux_loss

    def forward(self, samples: Sequence[Tensor] | Tensor, mask: Tensor | None = None) -> dict:
        """samples: a list of 3×H×W images of any sizes (padded here), or a padded [B, 3, H, W] batch with its
        mask [B, H, W] (True on padding; None means no padding).

        → 'pred_logits' [B, Q, num_classes + 1] (the last is "no object"), 'pred_boxes' [B, Q, 4] as
        (cx, cy, w, h) relative to each image's unpadded size, and with aux_loss 'aux_outputs', the same
        pair for every decoder layer but the last.
        """
        if isinstance(samples, Tensor):
            images = samples
            if mask is None:
                mask = torch.zeros((images.shape[0], *images.shape[-2:]), dtype=torch.bool, device=images.device)
        else:
            if mask is not None:
                raise ValueError("a mask goes with a padded batch tensor; a list of images is padded here")
            images, mask = pad_images(samples)

        features, mask, pos = self.backbone(images, mask)
        hs = self.transformer(self.input_proj(features), mask, self.query_embed.weight, pos)

        outputs_class = self.class_embed(hs)
        outputs_coord = self.bbox_embed(hs).sigmoid()
        out = {"pred_logits": outputs_class[-1], "pred_boxes": outputs_coord[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": a, "pred_boxes": b} for a, b in zip(outputs_class[:-1], outputs_coord[:-1])
            ]
        return out


class MLP(nn.Module):
    """A plain multi-layer perceptron with ReLU between its layers (DETR's box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


def pad_images(images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Images [C, H_i, W_i] → a zero-padded batch [B, C, max H, max W] (each image top-left) and its mask
    [B, max H, max W], True on padding."""
    if len(images) == 0:
        raise ValueError("pad_images needs at least one image")
    channels = images[0].shape[0]
    if any(img.dim() != 3 or img.shape[0] != channels for img in images):
        raise ValueError(f"images must all be [C, H, W] with the same C, got {[tuple(i.shape) for i in images]}")
    height = max(img.shape[1] for img in images)
    width = max(img.shape[2] for img in images)
    batch = images[0].new_zeros((len(images), channels, height, width))
    mask = torch.ones((len(images), height, width), dtype=torch.bool, device=images[0].device)
    for img, padded, m in zip(images, batch, mask):
        padded[:, : img.shape[1], : img.shape[2]].copy_(img)
        m[: img.shape[1], : img.shape[2]] = False
    return batch, mask


def build_model(cfg: DETRConfig, train_backbone: bool = True) -> tuple[DETR, SetCriterion, PostProcess]:
    """The detector, its loss and its post-processor for `cfg`; random weights unless cfg.backbone_weights asks.

    train_backbone=False freezes the whole backbone; pass `lr_backbone > 0` as the official training does.
    Modules are created in the official order, so a given seed initialises the model as the official does.
    """
    if isinstance(cfg.num_classes, bool) or not isinstance(cfg.num_classes, int):
        raise ValueError(f"num_classes is {cfg.num_classes!r}: resolve it first (detr.data.resolve_num_classes)")
    backbone = build_backbone(cfg, train_backbone)
    transformer = Transformer(
        d_model=cfg.hidden_dim,
        nhead=cfg.nheads,
        num_encoder_layers=cfg.enc_layers,
        num_decoder_layers=cfg.dec_layers,
        dim_feedforward=cfg.dim_feedforward,
        dropout=cfg.dropout,
        attention_dropout=cfg.attention_dropout_rate,
        fused_attention=cfg.attention == "fused",
    )
    model = DETR(backbone, transformer, cfg.num_classes, cfg.num_queries, aux_loss=cfg.aux_loss)

    matcher = HungarianMatcher(cost_class=cfg.set_cost_class, cost_bbox=cfg.set_cost_bbox, cost_giou=cfg.set_cost_giou)
    coefficients = {"loss_ce": 1.0, "loss_bbox": cfg.bbox_loss_coef, "loss_giou": cfg.giou_loss_coef}
    main_weights: dict[str, float] = {term: coefficients[term] for term in LOSS_TERMS}
    weight_dict = dict(main_weights)
    if cfg.aux_loss:
        weight_dict.update({f"{k}_{i}": v for i in range(cfg.dec_layers - 1) for k, v in main_weights.items()})
    criterion = SetCriterion(cfg.num_classes, matcher, weight_dict, cfg.eos_coef)
    return model, criterion, PostProcess()
