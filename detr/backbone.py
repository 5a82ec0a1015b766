"""The ResNet backbone with frozen BatchNorm, joined with the position encoding of its feature map."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from detr.checkpoint import describe_mismatch, load_checkpoint_state_dict
from detr.config import DETRConfig
from detr.errors import CheckpointError, ConfigError
from detr.position_encoding import PositionEmbeddingSine

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


class Backbone(nn.Module):
    """A torchvision ResNet up to layer4 (stride 32, or 16 with a dilated layer4), and the downsampled mask."""

    def __init__(self, resnet: nn.Module, train_backbone: bool, num_channels: int):
        super().__init__()
        for name, parameter in resnet.named_parameters():
            # The stem and layer1 stay at their ImageNet values, as in the official training.
            if not train_backbone or not any(layer in name for layer in ("layer2", "layer3", "layer4")):
                parameter.requires_grad_(False)
        self.body = IntermediateLayerGetter(resnet, return_layers={"layer4": "0"})
        self.num_channels = num_channels

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3, H, W], mask [B, H, W] → features [B, C, h, w] and the mask resized to them."""
        features = self.body(images)["0"]
        mask = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        return features, mask


class Joiner(nn.Sequential):
    """(Backbone, position encoding): an nn.Sequential so that the keys read `backbone.0.body.*`."""

    def __init__(self, backbone: Backbone, position_embedding: PositionEmbeddingSine):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """→ features [B, C, h, w], their padding mask [B, h, w] and position encodings [B, hidden, h, w]."""
        features, mask = self[0](images, mask)
        pos = self[1](mask).to(features.dtype)
        return features, mask, pos


def build_backbone(cfg: DETRConfig, train_backbone: bool = True) -> Joiner:
    """The ResNet named by `cfg.backbone`, with the weights `cfg.backbone_weights` asks for."""
    if cfg.backbone not in RESNETS:
        raise ConfigError(f"backbone must be one of {', '.join(RESNETS)}, got '{cfg.backbone}'")
    if cfg.dilation and cfg.backbone in ("resnet18", "resnet34"):
        raise ConfigError(f"dilation (DC5) needs a bottleneck ResNet (resnet50/101), got '{cfg.backbone}'")
    resnet = getattr(torchvision.models, cfg.backbone)(
        weights=None, norm_layer=FrozenBatchNorm2d, replace_stride_with_dilation=[False, False, cfg.dilation]
    )
    load_backbone_weights(resnet, cfg)
    num_channels = 512 if cfg.backbone in ("resnet18", "resnet34") else 2048
    position_embedding = PositionEmbeddingSine(cfg.hidden_dim // 2, normalize=True)
    return Joiner(Backbone(resnet, train_backbone, num_channels), position_embedding)


def load_backbone_weights(resnet: nn.Module, cfg: DETRConfig) -> None:
    """Load `cfg.backbone_weights` into a torchvision ResNet: "none" (random), "imagenet" or a state_dict file."""
    source = cfg.backbone_weights
    if source in ("", "none"):
        return
    hint = "pass --backbone-weights PATH to a torchvision ResNet state_dict, or --backbone-weights none"
    if source == "imagenet":
        # IMAGENET1K_V1: the weights `pretrained=True` gave, which the official DETR models were trained from.
        url = torchvision.models.get_model_weights(cfg.backbone)["IMAGENET1K_V1"].url
        try:
            state_dict = load_checkpoint_state_dict(url)
        except CheckpointError as e:
            raise CheckpointError(f"could not get the ImageNet {cfg.backbone} weights: {e}; {hint}") from None
    else:
        state_dict = load_checkpoint_state_dict(source)
    # The classifier `fc` is dropped by the feature extractor: a headless state_dict is fine, any head too.
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
    expected = {k: v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    mismatch = describe_mismatch(expected, state_dict)
    if mismatch:
        raise CheckpointError(f"backbone weights {source} do not fit torchvision's {cfg.backbone}: {mismatch}; {hint}")
    resnet.load_state_dict(state_dict, strict=False)
