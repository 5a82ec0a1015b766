"""An exported DETR file (detr.export) run through onnxruntime: the same detector interface as the PyTorch model.

A file with a fixed batch or image size takes any batch: larger images are scaled down to fit (boxes are relative
to each image's own size, so they stay right), smaller ones padded (True in the mask), a short batch filled with
copies of its first image whose outputs are dropped, a long one split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detr.errors import CheckpointError
from detr.export import POSTPROCESSED_INPUTS, POSTPROCESSED_OUTPUTS, RAW_INPUTS, RAW_OUTPUTS, read_metadata
from detr.postprocess import PostProcess

if TYPE_CHECKING:
    import onnxruntime


@dataclass
class Chunk:
    """One run of the file: inputs shaped as it takes them, and how many leading rows are real images."""

    images: Tensor
    mask: Tensor
    sizes: Tensor
    real: int


def is_onnx_file(path: str | Path) -> bool:
    """Whether `path` names an ONNX file (by its suffix: what `predict --weights` switches on)."""
    return str(path).lower().endswith(".onnx")


class OnnxDetector:
    """`path` in an onnxruntime session, called like `detr.engine.evaluate.Detector`."""

    def __init__(self, path: str | Path, device: torch.device | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = str(path)
        if not Path(path).is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # as many as PyTorch, for a fair timing
        options.log_severity_level = 3
        # Idle threads that spin would steal the cores PyTorch runs on in the same process (the check times both).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        cuda = device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        self.provider = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
        try:
            self.session: onnxruntime.InferenceSession = ort.InferenceSession(
                self.path, options, providers=[self.provider]
            )
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... classes, all "cannot load"
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load: {reason}") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if (inputs, outputs) == (list(RAW_INPUTS), list(RAW_OUTPUTS)):
            self.postprocess = False
        elif (inputs, outputs) == (list(POSTPROCESSED_INPUTS), list(POSTPROCESSED_OUTPUTS)):
            self.postprocess = True
        else:
            raise CheckpointError(
                f"{path} is not a DETR export: inputs {inputs}, outputs {outputs}; expected inputs images, mask "
                "(and target_sizes) and outputs pred_logits, pred_boxes (or scores, labels, boxes)"
            )
        shape = self.session.get_inputs()[0].shape  # [B, 3, H, W]; symbolic axes are names
        self.batch: int | None = shape[0] if isinstance(shape[0], int) else None
        self.size: tuple[int, int] | None = (
            (shape[2], shape[3]) if isinstance(shape[2], int) and isinstance(shape[3], int) else None
        )
        self.metadata = read_metadata(self.session.get_modelmeta().custom_metadata_map)
        self.postprocessor = PostProcess()

    def fit(self, images: Tensor, mask: Tensor, sizes: Tensor) -> list[Chunk]:
        """The batch as the file takes it (see the module's docstring); a dynamic file takes it as it is."""
        if self.size is not None:
            images, mask = fit_size(images, mask, self.size)
        if self.batch is None:
            return [Chunk(images, mask, sizes, len(images))]
        chunks = []
        for start in range(0, len(images), self.batch):
            part = slice(start, start + self.batch)
            real = len(images[part])
            fill = [0] * (self.batch - real)
            chunks.append(
                Chunk(
                    torch.cat([images[part], images[part][fill]]),
                    torch.cat([mask[part], mask[part][fill]]),
                    torch.cat([sizes[part], sizes[part][fill]]),
                    real,
                )
            )
        return chunks

    def run(self, chunk: Chunk) -> list[np.ndarray]:
        """The file's outputs for one fitted chunk, real rows only (in the order of its output names)."""
        feeds = {"images": chunk.images.cpu().float().numpy(), "mask": chunk.mask.cpu().numpy()}
        if self.postprocess:
            feeds["target_sizes"] = chunk.sizes.cpu().to(torch.int64).numpy()
        return [np.asarray(out)[: chunk.real] for out in self.session.run(None, feeds)]

    def detections(self, chunk: Chunk, outputs: list[np.ndarray]) -> list[dict[str, Tensor]]:
        """Per-image scores, labels and xyxy boxes in `chunk.sizes` pixels from the file's outputs."""
        if self.postprocess:
            scores, labels, boxes = (torch.from_numpy(o) for o in outputs)
            return [{"scores": s, "labels": c, "boxes": b} for s, c, b in zip(scores, labels, boxes)]
        logits, boxes = (torch.from_numpy(o) for o in outputs)
        return self.postprocessor({"pred_logits": logits, "pred_boxes": boxes}, chunk.sizes[: chunk.real].cpu())

    def __call__(self, images: Tensor, mask: Tensor, sizes: Tensor) -> list[dict[str, Tensor]]:
        results: list[dict[str, Tensor]] = []
        for chunk in self.fit(images, mask, sizes):
            results.extend(self.detections(chunk, self.run(chunk)))
        return results


def fit_size(images: Tensor, mask: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """A padded batch brought to exactly `size` (H, W): scaled down to fit when larger, then padded."""
    height, width = images.shape[-2:]
    scale = min(size[0] / height, size[1] / width, 1.0)
    if scale < 1.0:
        new = (max(1, int(height * scale)), max(1, int(width * scale)))
        images = F.interpolate(images, size=new, mode="bilinear", align_corners=False, antialias=True)
        mask = F.interpolate(mask[:, None].float(), size=new)[:, 0].to(torch.bool)
        height, width = new
    padded = images.new_zeros((len(images), 3, *size))
    padded[:, :, :height, :width] = images
    padded_mask = torch.ones((len(images), *size), dtype=torch.bool, device=mask.device)
    padded_mask[:, :height, :width] = mask
    return padded, padded_mask
