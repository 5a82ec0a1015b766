"""The padded input shape to profile at: the transforms' worst case, a fixed H×W, or real batches'."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from typing import Any

from detr.config import RunConfig
from detr.errors import ConfigError

DATASET_BATCHES = 16  # batches drawn to see the dataset's padded shapes


@dataclass
class Shape:
    """(H, W), where it comes from (worst | fixed | dataset) and, for a dataset, its batches' shapes."""

    hw: tuple[int, int]
    source: str
    distribution: dict[str, Any] = field(default_factory=dict)


def parse_shape(text: str) -> tuple[int, int] | None:
    """`800x1333` → (800, 1333); None for `worst`/`dataset` (resolved against the profile)."""
    if text in ("worst", "dataset"):
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[x×X]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise ConfigError(f"--shape must be worst, dataset or HxW with positive H and W (e.g. 800x1333), got '{text}'")
    return int(match.group(1)), int(match.group(2))


def resolve_shape(text: str, cfg: RunConfig, batch_size: int) -> Shape:
    """The shape `--shape` asks for; `dataset` draws batches of `batch_size` from the profile's training data."""
    fixed = parse_shape(text)
    if fixed is not None:
        return Shape(fixed, "fixed")
    if text == "worst":
        from detr.data import worst_case_batch_shape

        try:
            return Shape(worst_case_batch_shape(cfg.data, train=True), "worst")
        except ValueError as e:  # no max_size: the transforms' output is unbounded
            raise ConfigError(f"--shape worst: {e}; give --shape HxW or --shape dataset") from None
    return _dataset_shape(cfg, batch_size)


def _dataset_shape(cfg: RunConfig, batch_size: int) -> Shape:
    """The largest padded shape among the first training batches of the data loader, and their spread."""
    from detr.data import build_dataset
    from detr.engine.loaders import batch_sampler, build_loader

    dataset = build_dataset(cfg.data, "train", train=True, seed=cfg.train.seed)
    loader = build_loader(dataset, cfg.data, batch_size, train=True, seed=cfg.train.seed, pin_memory=False)
    batch_sampler(loader).set_epoch(0)
    shapes: list[tuple[int, int]] = []
    for images, _mask, _targets in loader:
        shapes.append(tuple(images.shape[-2:]))
        if len(shapes) == DATASET_BATCHES:
            break
    if not shapes:
        raise ConfigError(f"--shape dataset: the training set has fewer than {batch_size} images, not one batch")
    areas = sorted(h * w for h, w in shapes)
    distribution = {
        "batch_size": batch_size,
        "batches": len(shapes),
        "shapes": [list(s) for s in shapes],
        "pixels_min": areas[0],
        "pixels_median": int(statistics.median(areas)),
        "pixels_max": areas[-1],
    }
    return Shape((max(h for h, _ in shapes), max(w for _, w in shapes)), "dataset", distribution)
