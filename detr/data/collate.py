"""Padded batching: images to the batch's largest H×W with a mask of the padding, as the model expects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def collate_batch(samples: Sequence[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """(images float32 [B,3,H,W] zero-padded bottom/right, mask bool [B,H,W] True on padding, targets)."""
    heights = [image.shape[-2] for image, _ in samples]
    widths = [image.shape[-1] for image, _ in samples]
    hmax, wmax = max(heights), max(widths)
    # empty + zeroing only the padding writes each pixel once; torch.zeros then copy writes it twice.
    images = torch.empty((len(samples), 3, hmax, wmax), dtype=samples[0][0].dtype)
    mask = torch.ones((len(samples), hmax, wmax), dtype=torch.bool)
    for i, ((image, _), h, w) in enumerate(zip(samples, heights, widths)):
        images[i, :, :h, :w].copy_(image)
        images[i, :, h:, :].zero_()
        images[i, :, :h, w:].zero_()
        mask[i, :h, :w] = False
    return images, mask, [target for _, target in samples]


def padding_fraction(shapes: Sequence[tuple[int, int]], batches: Iterable[Sequence[int]]) -> float:
    """Share of the padded batch pixels that are padding, for images of `shapes` (h, w) batched as given."""
    real = padded = 0
    for batch in batches:
        if not batch:
            continue
        hs = [shapes[i][0] for i in batch]
        ws = [shapes[i][1] for i in batch]
        real += sum(h * w for h, w in zip(hs, ws))
        padded += len(batch) * max(hs) * max(ws)
    return 1 - real / padded if padded else 0.0
