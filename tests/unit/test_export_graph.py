"""The pieces of the ONNX export that need no checkpoint: the backbone's mask downsampling (PyTorch's rounding,
in PyTorch and in the exported graph) and the atomic write that the file and the checkpoints share."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr.backbone import downsample_mask
from detr.engine.checkpointing import current_umask, write_atomic
from detr.export import export_onnx


def test_downsample_mask_is_f_interpolate_nearest_at_every_size():
    generator = torch.Generator().manual_seed(0)
    for size in range(1, 1400, 3):
        mask = torch.rand((1, size, 3), generator=generator) > 0.5
        for out in {1, 2, 3, -(-size // 8), -(-size // 16), -(-size // 32)}:
            expected = F.interpolate(mask[None].float(), size=(out, 3)).to(torch.bool)[0]
            assert torch.equal(downsample_mask(mask, out, 3), expected), (size, out)


class MaskOnly(nn.Module):
    """A stand-in detector whose outputs are the backbone's downsampled mask (stride 32 as ResNet's)."""

    def forward(self, images: Tensor, mask: Tensor) -> dict[str, Tensor]:
        small = downsample_mask(mask, (mask.shape[1] - 1) // 32 + 1, (mask.shape[2] - 1) // 32 + 1)
        return {"pred_logits": small.float().flatten(1)[..., None], "pred_boxes": images.mean((1, 2, 3))[:, None]}


def test_the_exported_mask_downsampling_rounds_as_pytorch(tmp_path: Path):
    import onnxruntime as ort

    path = tmp_path / "mask.onnx"
    export_onnx(MaskOnly(), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for height in (90, 120, 360, 1066, 1199):  # sizes whose ratio to the feature size makes Resize floor early
        mask = torch.zeros((1, height, 40), dtype=torch.bool)
        sampled = downsample_mask(torch.arange(height)[None, :, None], (height - 1) // 32 + 1, 1).flatten().tolist()
        for start in sorted({row + step for row in sampled for step in (0, 1)} - {height}):  # padding from there on
            mask[:, start:] = True
            got = session.run(None, {"images": np.zeros((1, 3, height, 40), np.float32), "mask": mask.numpy()})[0]
            assert np.array_equal(got, MaskOnly()(torch.zeros((1, 3, height, 40)), mask)["pred_logits"].numpy())
            mask[:] = False


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary_one(tmp_path: Path):
    def fail_halfway(f: BinaryIO) -> None:
        f.write(b"half a model")
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        write_atomic(tmp_path / "model.onnx", fail_halfway)
    assert list(tmp_path.iterdir()) == []
    write_atomic(tmp_path / "model.onnx", lambda f: f.write(b"whole"), shared=True)
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"] and (tmp_path / "model.onnx").read_bytes() == b"whole"
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~current_umask()  # not mkstemp's 0600
