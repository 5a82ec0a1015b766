"""The paper's augmentations on uint8 images with torchvision.transforms.v2 functional ops.

Random choices come from the `random.Random` passed in (seeded per sample by the dataset) and are
drawn in the official code's order, so a sample depends only on (seed, epoch, index). Geometry runs on
uint8 (cheaper, and the fast antialiased resize kernel is uint8); conversion to float is the last step.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as F
from torchvision import tv_tensors

from detr.config import DataConfig
from detr.data.shapes import resized_size

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_255 = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
_INV_STD_255 = 1 / (torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255)

Sample = tuple[torch.Tensor, tv_tensors.BoundingBoxes, torch.Tensor]  # image uint8 3×H×W, boxes xyxy, labels
Output = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # image float32 normalised, boxes cxcywh relative, labels


def as_boxes(boxes: torch.Tensor, height: int, width: int) -> tv_tensors.BoundingBoxes:
    """Pixel xyxy boxes of an image of the given size."""
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))


def hflip(sample: Sample) -> Sample:
    image, boxes, labels = sample
    return F.horizontal_flip(image), F.horizontal_flip(boxes), labels


def resize(sample: Sample, size: int, max_size: int | None) -> Sample:
    """Shorter side to `size`, longer side at most `max_size` (official rounding)."""
    image, boxes, labels = sample
    h, w = image.shape[-2:]
    new = list(resized_size(h, w, size, max_size))
    if new == [h, w]:
        return sample
    return F.resize(image, new, antialias=True), F.resize(boxes, new), labels


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop; boxes are clamped to the crop and those left without area are dropped, as official."""
    image, boxes, labels = sample
    boxes = F.crop(boxes, top, left, height, width)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return F.crop(image, top, left, height, width), tv_tensors.wrap(boxes[keep], like=boxes), labels[keep]


def random_size_crop(sample: Sample, min_size: int, max_size: int, rng: random.Random) -> Sample:
    """A crop of random size in [min_size, max_size] (within the image) at a random position."""
    h, w = sample[0].shape[-2:]
    cw = rng.randint(min(min_size, w), min(w, max_size))
    ch = rng.randint(min(min_size, h), min(h, max_size))
    top, left = rng.randint(0, h - ch), rng.randint(0, w - cw)
    image, boxes, labels = crop(sample, top, left, ch, cw)
    # A cropped view is strided; HWC-contiguous memory keeps the next resize on its fast uint8 path.
    return image.permute(1, 2, 0).contiguous().permute(2, 0, 1), boxes, labels


def normalize(sample: Sample) -> Output:
    """Float ImageNet-normalised CHW image (contiguous) and boxes as cxcywh relative to the image."""
    image, boxes, labels = sample
    h, w = image.shape[-2:]
    out = torch.empty(image.shape, dtype=torch.float32)
    out.copy_(image)  # one pass converts uint8 → float and HWC → CHW memory
    out.sub_(_MEAN_255).mul_(_INV_STD_255)
    cxcywh = F.convert_bounding_box_format(boxes, new_format="CXCYWH").as_subclass(torch.Tensor)
    return out, cxcywh / torch.tensor([w, h, w, h], dtype=torch.float32), labels


class TrainTransform:
    """Flip; then multi-scale resize, or (with `crop_probability`, paper 0.5) resize → random crop →
    multi-scale resize; normalise."""

    def __init__(self, data_cfg: DataConfig) -> None:
        self.scales: Sequence[int] = list(data_cfg.train_scales)
        self.max_size = data_cfg.max_size or None
        self.crop_resize_scales: Sequence[int] = list(data_cfg.crop_resize_scales)
        self.crop_min, self.crop_max = data_cfg.crop_min_size, data_cfg.crop_max_size
        self.hflip = data_cfg.hflip
        self.crop_probability = data_cfg.crop_probability

    def __call__(self, sample: Sample, rng: random.Random) -> Output:
        if self.hflip and rng.random() < 0.5:
            sample = hflip(sample)
        if rng.random() >= self.crop_probability:
            sample = resize(sample, rng.choice(self.scales), self.max_size)
        else:
            sample = resize(sample, rng.choice(self.crop_resize_scales), None)
            sample = random_size_crop(sample, self.crop_min, self.crop_max, rng)
            sample = resize(sample, rng.choice(self.scales), self.max_size)
        return normalize(sample)


class ValTransform:
    """Shorter side to val_size, longer side at most max_size; normalise."""

    def __init__(self, data_cfg: DataConfig) -> None:
        self.size = data_cfg.val_size
        self.max_size = data_cfg.max_size or None

    def __call__(self, sample: Sample, rng: random.Random | None = None) -> Output:
        return normalize(resize(sample, self.size, self.max_size))
