"""Stand-in models for the memprofile tests, built from a RunConfig like DETR (see PointRequest.build):
a plain MLP whose memory is easy to count, and the same MLP out of memory above a batch size."""

from __future__ import annotations

import torch
from torch import nn

SIDE = 16  # the tests' images are SIDE×SIDE
FAIL_ABOVE = 2  # the "oom" model's largest batch that fits


class SquareLoss(nn.Module):
    weight_dict = {"loss": 1.0}

    def forward(self, outputs: torch.Tensor, targets: list[dict]) -> dict[str, torch.Tensor]:
        return {"loss": outputs.float().pow(2).mean()}


class MLP(nn.Module):
    """Every parameter a multiple of 128 floats, so 512-byte allocator blocks hold them without rounding."""

    def __init__(self, fail_above: int | None = None):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(3 * SIDE * SIDE, 256), nn.ReLU(), nn.Linear(256, 128))
        self.fail_above = fail_above

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.fail_above is not None and images.shape[0] > self.fail_above:
            # The exception a real allocation failure raises, at the moment a real one would.
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {images.shape[0]} batches (simulated)")
        return self.layers(images.flatten(1))


def build_mlp(cfg) -> tuple[nn.Module, nn.Module]:
    return MLP(), SquareLoss()


def build_oom_mlp(cfg) -> tuple[nn.Module, nn.Module]:
    return MLP(fail_above=FAIL_ABOVE), SquareLoss()
