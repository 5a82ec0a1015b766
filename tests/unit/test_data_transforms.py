"""Flip, resize and crop keep boxes on the drawn object; output sizes and the worst-case batch shape."""

from __future__ import annotations

import random

import pytest
import torch

from detr.config import DataConfig
from detr.data import resized_size, worst_case_batch_shape
from detr.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainTransform,
    ValTransform,
    as_boxes,
    crop,
    hflip,
    normalize,
    resize,
)

SMALL = DataConfig(
    train_scales=[64, 80, 96],
    max_size=128,
    crop_resize_scales=[64, 80],
    crop_min_size=40,
    crop_max_size=64,
    val_size=80,
)


def rectangle_sample(h: int, w: int, box: tuple[int, int, int, int]):
    """A black image with a white rectangle (pixel xyxy) and its box, laid out like a decoded image."""
    image = torch.zeros(h, w, 3, dtype=torch.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image.permute(2, 0, 1), as_boxes(torch.tensor([box], dtype=torch.float32), h, w), torch.tensor([1])


def bright_box(image: torch.Tensor) -> list[int]:
    """Pixel xyxy extent of the bright pixels of a uint8 or ImageNet-normalised image."""
    if image.dtype != torch.uint8:
        image = image * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        image = image * 255
    bright = image[0] > 127
    ys, xs = bright.any(dim=1).nonzero(), bright.any(dim=0).nonzero()
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def assert_aligned(image: torch.Tensor, boxes: torch.Tensor, tol: float = 1.5) -> None:
    assert len(boxes) == 1
    assert max(abs(a - b) for a, b in zip(bright_box(image), boxes[0].tolist())) <= tol


def test_hflip_resize_crop_keep_the_box_on_the_object() -> None:
    sample = rectangle_sample(60, 80, (10, 20, 35, 50))
    flipped = hflip(sample)
    assert flipped[1][0].tolist() == [45, 20, 70, 50]
    assert_aligned(flipped[0], flipped[1], tol=0)
    resized = resize(sample, 90, 1000)
    assert resized[0].shape[-2:] == (90, 120)
    assert_aligned(resized[0], resized[1])
    cropped = crop(sample, 25, 20, 30, 40)
    assert cropped[1][0].tolist() == [0, 0, 15, 25]
    assert_aligned(cropped[0], cropped[1], tol=0)


def test_crop_drops_boxes_that_leave_it() -> None:
    image, boxes, labels = rectangle_sample(60, 80, (10, 20, 35, 50))
    two = as_boxes(torch.tensor([[10, 20, 35, 50], [60, 5, 75, 15]], dtype=torch.float32), 60, 80)
    _, kept, kept_labels = crop((image, two, torch.tensor([1, 2])), 18, 0, 40, 50)
    assert kept.tolist() == [[10, 2, 35, 32]] and kept_labels.tolist() == [1]


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_keeps_boxes_aligned(seed: int) -> None:
    # Small box away from the border: every crop either keeps all of it or a visible part.
    image, target_boxes, labels = rectangle_sample(90, 120, (40, 30, 80, 60))
    out, boxes, kept = TrainTransform(SMALL)((image, target_boxes, labels), random.Random(seed))
    h, w = out.shape[-2:]
    assert out.dtype == torch.float32 and out.is_contiguous()
    if len(boxes) == 0:  # the crop missed the rectangle
        assert not (out[0] > 1.5).any()
        return
    cx, cy, bw, bh = (boxes[0] * torch.tensor([w, h, w, h])).tolist()
    assert_aligned(out, torch.tensor([[cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]]), tol=2)


@pytest.mark.parametrize("probability, crops", [(0.0, False), (1.0, True)])
def test_crop_probability_zero_never_crops_and_one_always_does(probability: float, crops: bool) -> None:
    # A rectangle at the image's right edge: any crop cuts into the image, so it moves or shrinks.
    image, boxes, labels = rectangle_sample(90, 120, (100, 30, 120, 60))
    cfg = DataConfig(**{**SMALL.__dict__, "crop_probability": probability, "hflip": False})
    full = [0.9167, 0.5, 0.1667, 0.3333]  # the rectangle relative to the whole image (cx, cy, w, h)
    for seed in range(8):
        _, out_boxes, _ = TrainTransform(cfg)((image, boxes, labels), random.Random(seed))
        whole = len(out_boxes) == 1 and torch.allclose(out_boxes[0], torch.tensor(full), atol=2e-3)
        assert whole != crops


def test_val_transform_and_normalize() -> None:
    image, boxes, labels = rectangle_sample(60, 80, (10, 20, 35, 50))
    out, rel, _ = ValTransform(SMALL)((image, boxes, labels))
    assert out.shape == (3, 80, 106)
    torch.testing.assert_close(rel, torch.tensor([[22.5 / 80, 35 / 60, 25 / 80, 30 / 60]]))
    normalised, _, _ = normalize((image, boxes, labels))
    black = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    assert normalised[:, 0, 0].tolist() == pytest.approx(black, abs=1e-5)


def test_resized_size_follows_the_official_formula() -> None:
    assert resized_size(480, 640, 800, 1333) == (800, 1066)
    assert resized_size(640, 480, 800, 1333) == (1066, 800)
    assert resized_size(400, 1000, 800, 1333) == (533, 1332)
    assert resized_size(800, 1000, 800, 1333) == (800, 1000)
    assert resized_size(100, 1005, 800, 1333) == (133, 1333)  # official rounding would give 1336


def test_worst_case_batch_shape() -> None:
    assert worst_case_batch_shape(DataConfig()) == (1333, 1333)
    assert worst_case_batch_shape(DataConfig(), train=False) == (1333, 1333)
    assert worst_case_batch_shape(DataConfig(), train=False, aspect_ratios=[4 / 3]) == (800, 1066)
    # A 600×384 crop resized to 800 is 1250 long, whatever the images' aspect ratios.
    assert worst_case_batch_shape(DataConfig(), aspect_ratios=[4 / 3, 3 / 4]) == (1250, 1250)


def test_worst_case_bounds_every_training_output() -> None:
    rng = random.Random(0)
    sizes = [(rng.randint(30, 200), rng.randint(30, 200)) for _ in range(40)]
    bound = worst_case_batch_shape(SMALL, aspect_ratios=[w / h for h, w in sizes])
    transform = TrainTransform(SMALL)
    seen = [0, 0]
    for i, (h, w) in enumerate(sizes):
        for seed in range(5):
            sample = (torch.zeros(3, h, w, dtype=torch.uint8), as_boxes(torch.zeros(0, 4), h, w), torch.zeros(0))
            out, _, _ = transform(sample, random.Random(i * 10 + seed))
            seen = [max(seen[0], out.shape[1]), max(seen[1], out.shape[2])]
    assert seen[0] <= bound[0] and seen[1] <= bound[1]
    assert worst_case_batch_shape(SMALL) == (128, 128)
