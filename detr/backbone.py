"""The ResNet backbone with frozen BatchNorm, joined with the position encoding of its feature map."""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozenBatchNorm2d

from detr.checkpoint import describe_mismatch, load_checkpoint_state_dict
from detr.config import DETRConfig, backbone_checks
from detr.errors import CheckpointError, ConfigError
from detr.position_encoding import PositionEmbeddingSine


class FrozenBatchNorm2d(TorchvisionFrozenBatchNorm2d):
    """torchvision's frozen BatchNorm (same buffers, same float32 result), applied in the input's dtype.

    Under autocast the convolutions produce bf16/fp16; torchvision's float32 scale and shift would
    promote every normalised activation back to float32, which doubles the backbone's activation memory
    and leaves AMP saving almost nothing. Once `fold_frozen_batchnorm` has folded it into the convolution
    before it, it passes its input through: that convolution applied it already.
    """

    folded = False

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """The per-channel affine map it applies: x · scale + shift."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        if self.folded:
            return x
        scale, shift = self.scale_shift()
        return x * scale.to(x.dtype)[:, None, None] + shift.to(x.dtype)[:, None, None]


class FoldedConv2d(nn.Conv2d):
    """A convolution and the frozen BatchNorm after it as one convolution: weight · scale, bias shift.

    The normalisation's two passes over the activation (a multiply and an add, the backbone's largest
    elementwise cost) become the convolution's own bias: the frozen R50 backbone's forward took ~30 % less
    time on a 2-core CPU. The fold is recomputed from the current weights at every call (a weight-sized
    product), so a training backbone gets its gradients through it, and the parameters, their names and
    the checkpoints stay those of the separate modules. The norm is referenced, not registered: its
    buffers keep their keys under their own module.
    """

    _norm: FrozenBatchNorm2d

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self._norm.scale_shift()
        return self._conv_forward(x, self.weight * scale[:, None, None, None], shift)


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Fold every frozen BatchNorm of a torchvision ResNet into the convolution before it; the count folded.

    The pairs are torchvision's: `convN` then `bnN` in a block or the stem, and a `downsample`
    Sequential(conv, norm). Each convolution becomes a FoldedConv2d in place (the same object: its
    parameters, hooks and name unchanged); the norm passes its input through from then on.
    """
    count = 0
    for parent in module.modules():
        children = dict(parent.named_children())
        pairs = [(name, "bn" + name.removeprefix("conv")) for name in children if name.startswith("conv")]
        if isinstance(parent, nn.Sequential):
            pairs += list(zip(children, list(children)[1:]))
        for conv_name, norm_name in pairs:
            conv, norm = children.get(conv_name), children.get(norm_name)
            if type(conv) is nn.Conv2d and conv.bias is None and isinstance(norm, FrozenBatchNorm2d):
                conv.__class__ = FoldedConv2d
                object.__setattr__(conv, "_norm", norm)  # not a submodule: no `convN._norm.*` keys
                norm.folded = True
                count += 1
    return count


def unfold_frozen_batchnorm(module: nn.Module) -> None:
    """Undo `fold_frozen_batchnorm`: separate convolutions and norms again (the reference for numerics)."""
    for conv in module.modules():
        if isinstance(conv, FoldedConv2d):
            conv._norm.folded = False
            conv.__class__ = nn.Conv2d  # type: ignore[assignment]  # back to the plain class, in place
            del conv._norm


class Backbone(nn.Module):
    """A torchvision ResNet up to layer4 (stride 32, or 16 with a dilated layer4) or layer3 (stride 16),
    and the downsampled mask."""

    def __init__(
        self, resnet: nn.Module, train_backbone: bool, num_channels: int, train_stem: bool = False, stage: int = 4
    ):
        super().__init__()
        for name, parameter in resnet.named_parameters():
            # The stem and layer1 stay at their ImageNet values, as in the official training (train_stem:
            # a backbone trained from scratch has no such values to keep).
            in_stem = not any(layer in name for layer in ("layer2", "layer3", "layer4"))
            if not train_backbone or (in_stem and not train_stem):
                parameter.requires_grad_(False)
        # The getter keeps the layers up to the one returned: with stage 3, layer4 is not built into the model.
        self.body = IntermediateLayerGetter(resnet, return_layers={f"layer{stage}": "0"})
        self.num_channels = num_channels

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """images [B, 3, H, W], mask [B, H, W] → features [B, C, h, w] and the mask resized to them."""
        features = self.body(images)["0"]
        return features, downsample_mask(mask, features.shape[-2], features.shape[-1])


def downsample_mask(mask: Tensor, height: int, width: int) -> Tensor:
    """mask [B, H, W] → [B, height, width]: F.interpolate's "nearest" (the official code's), computed as it does.

    Row i takes source row floor(i · float32(H / height)), as PyTorch's kernel computes it. Exported, interpolate
    becomes ONNX Resize, which divides by the inverse ratio and floors one row early where i · H / height is a
    whole number: at H = 90, 120 or 360 (stride 32) with the padding starting at row 30, 60, 90, ..., a feature
    row flips between image and padding, and the exported model's detections move.
    """
    rows = source_indices(mask.shape[-2], height, mask.device)
    columns = source_indices(mask.shape[-1], width, mask.device)
    return mask[:, rows][:, :, columns]


def source_indices(size: int, out_size: int, device: torch.device) -> Tensor:
    """The source index of each of `out_size` nearest-neighbour samples of `size` (PyTorch's float32 rule)."""
    scale = torch.full((), size, dtype=torch.float32, device=device) / out_size
    index = (torch.arange(out_size, dtype=torch.float32, device=device) * scale).floor().long()
    return index.clamp(max=size - 1)


class Joiner(nn.Sequential):
    """(Backbone, position encoding): an nn.Sequential so that the keys read `backbone.0.body.*`."""

    def __init__(self, backbone: Backbone, position_embedding: PositionEmbeddingSine):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]  # keys only
        """→ features [B, C, h, w], their padding mask [B, h, w] and position encodings [B, hidden, h, w]."""
        features, mask = self[0](images, mask)
        pos = self[1](mask).to(features.dtype)
        return features, mask, pos


def build_backbone(cfg: DETRConfig, train_backbone: bool = True) -> Joiner:
    """The ResNet named by `cfg.backbone`, with the weights `cfg.backbone_weights` asks for."""
    for ok, message in backbone_checks(cfg):
        if not ok:
            raise ConfigError(message)
    norm_layer = FrozenBatchNorm2d if cfg.backbone_norm == "frozen" else nn.BatchNorm2d
    resnet = getattr(torchvision.models, cfg.backbone)(
        weights=None, norm_layer=norm_layer, replace_stride_with_dilation=[False, False, cfg.dilation]
    )
    load_backbone_weights(resnet, cfg)
    fold_frozen_batchnorm(resnet)
    num_channels = (512 if cfg.backbone in ("resnet18", "resnet34") else 2048) >> (4 - cfg.backbone_stage)
    position_embedding = PositionEmbeddingSine(cfg.hidden_dim // 2, normalize=True)
    backbone = Backbone(resnet, train_backbone, num_channels, cfg.train_backbone_stem, cfg.backbone_stage)
    return Joiner(backbone, position_embedding)


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
