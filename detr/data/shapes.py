"""Output sizes of the resize transforms, and the largest padded batch they can produce."""

from __future__ import annotations

import math
from collections.abc import Sequence

from detr.config import DataConfig


def resized_size(h: int, w: int, size: int, max_size: int | None = None) -> tuple[int, int]:
    """(height, width) after resizing the shorter side to `size` with the longer side at most `max_size`.

    The official DETR formula, plus one guard: its rounding can overshoot `max_size` by a pixel on
    images wider than 2:1, so the longer side is clamped to keep `worst_case_batch_shape` a true bound.
    """
    if max_size:
        short, long = min(h, w), max(h, w)
        if long / short * size > max_size:
            size = int(round(max_size * short / long))
    if (w <= h and w == size) or (h <= w and h == size):
        return h, w
    if w < h:
        oh, ow = int(size * h / w), size
    else:
        oh, ow = size, int(size * w / h)
    if max_size:
        oh, ow = min(oh, max_size), min(ow, max_size)
    return oh, ow


def _longest_side(ratio: float, scales: Sequence[int], max_size: int) -> int:
    """The longer output side, over all scales, of an image whose sides are in `ratio` ≥ 1."""
    if math.isinf(ratio):
        return max_size
    short = 10_000  # a large reference side keeps integer rounding of the ratio negligible
    return max(max(resized_size(short, round(short * ratio), s, max_size)) for s in scales)


def worst_case_batch_shape(
    data_cfg: DataConfig, train: bool = True, aspect_ratios: Sequence[float] | None = None
) -> tuple[int, int]:
    """The largest (H, W) a padded batch can reach under the configured transforms.

    Without `aspect_ratios` (width/height of the dataset's images) any aspect ratio is assumed, so a
    portrait and a landscape image in one batch give max_size × max_size. With them, the bound is the
    tallest portrait and the widest landscape output, including the shapes the random crop can create.
    """
    if data_cfg.max_size <= 0 and aspect_ratios is None:
        raise ValueError("the worst-case batch shape is unbounded without max_size or the dataset's aspect ratios")
    scales = list(data_cfg.train_scales) if train else [data_cfg.val_size]
    max_size = data_cfg.max_size if data_cfg.max_size > 0 else 0
    if aspect_ratios is None:
        wide = tall = math.inf
    else:
        wide = max((r for r in aspect_ratios if r >= 1), default=0.0)
        tall = max((1 / r for r in aspect_ratios if r < 1), default=0.0)
    if train:
        # A crop of the resized image can have any aspect ratio up to crop_max / (smallest crop side).
        shortest = min(data_cfg.crop_min_size, min(data_cfg.crop_resize_scales))
        crop_ratio = max(data_cfg.crop_max_size / shortest, 1.0)
        wide, tall = max(wide, crop_ratio), max(tall, crop_ratio)
    square = _longest_side(1.0, scales, max_size)
    height = max(square, _longest_side(tall, scales, max_size) if tall else 0)
    width = max(square, _longest_side(wide, scales, max_size) if wide else 0)
    return height, width
