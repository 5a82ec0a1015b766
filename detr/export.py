"""DETR to ONNX through PyTorch's own exporter, written atomically, with what a runtime needs to read it back.

The exporter is `torch.onnx.export(dynamo=True)` (torch.export, then onnxscript's translation), the default since
torch 2.9. Its axes are symbolic and checked: were any step of the model (the backbone's strided convolutions, the
mask downsampling, the sine position encoding, the attention's boolean mask) to fix the batch or an image side,
export fails with the constraint it broke, where the legacy TorchScript tracer (`dynamo=False`, a
DeprecationWarning since 2.9) silently bakes the traced size into the graph. It translates
F.scaled_dot_product_attention with its mask, so the fused attention path exports as it runs.

Without post-processing the graph takes `images` [B, 3, H, W] float32 (normalised as the model expects) and `mask`
[B, H, W] bool (True on padding) and returns `pred_logits` and `pred_boxes` as the model does (the auxiliary
outputs of the other decoder layers are training-only and left out). With post-processing it also takes
`target_sizes` [B, 2] int64 (height, width) and returns `scores`, `labels` and xyxy `boxes` in those pixels: one
detection per query, as `PostProcess` computes them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from detr.engine.checkpointing import write_atomic
from detr.errors import ConfigError, DetrError
from detr.postprocess import batched_detections

RAW_INPUTS = ("images", "mask")
RAW_OUTPUTS = ("pred_logits", "pred_boxes")
POSTPROCESSED_INPUTS = ("images", "mask", "target_sizes")
POSTPROCESSED_OUTPUTS = ("scores", "labels", "boxes")
LOWEST_OPSET = 18  # what the dynamo exporter's operator library writes; other opsets go through onnx's converter
DEFAULT_OPSET = 18
METADATA_PREFIX = "detrdoctor."  # metadata_props keys: config (profile TOML), categories (JSON), postprocess
MIN_DYNAMIC_SIDE = 32  # one stride-32 feature: the smallest image side a dynamic export promises to take


class ExportError(DetrError):
    """The exporter could not translate the model (an operator or shape it does not handle)."""


@dataclass(frozen=True)
class ExportShape:
    """The input shape the file promises: a fixed batch and/or image size, or symbolic (None)."""

    batch: int | None = None
    size: tuple[int, int] | None = None  # (height, width)


class ExportedDETR(nn.Module):
    """The model as the ONNX graph computes it: tensors in, a tuple of tensors out."""

    def __init__(self, model: nn.Module, postprocess: bool) -> None:
        super().__init__()
        self.model = model
        self.postprocess = postprocess

    def forward(self, images: Tensor, mask: Tensor, target_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        outputs = self.model(images, mask)
        if not self.postprocess:
            return outputs["pred_logits"], outputs["pred_boxes"]
        assert target_sizes is not None
        return batched_detections(outputs["pred_logits"], outputs["pred_boxes"], target_sizes)


def highest_opset() -> int:
    """The newest opset the installed onnx package can write."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """ConfigError unless the exporter and the installed onnx can write `opset`."""
    highest = highest_opset()
    if not LOWEST_OPSET <= opset <= highest:
        raise ConfigError(
            f"--opset {opset}: the installed onnx writes opsets {LOWEST_OPSET} to {highest} "
            f"(PyTorch's exporter starts at {LOWEST_OPSET}); pick one of those"
        )


def example_inputs(shape: ExportShape, postprocess: bool) -> tuple[Tensor, ...]:
    """Inputs to trace with: the fixed shape, else batch 2 at 96×128 with padding in the second image (distinct
    sizes, so that no axis is specialised to another's value)."""
    batch = shape.batch or 2
    height, width = shape.size or (96, 128)
    images = torch.zeros((batch, 3, height, width))
    mask = torch.zeros((batch, height, width), dtype=torch.bool)
    if batch > 1:
        mask[1:, :, width * 3 // 4 :] = True
    if not postprocess:
        return images, mask
    return images, mask, torch.tensor([[height, width]] * batch)


def dynamic_shapes(shape: ExportShape, postprocess: bool) -> dict[str, dict[int, object]] | None:
    """torch.export's symbolic axes for the inputs: batch and/or H, W."""
    from torch.export import Dim

    if shape.batch is not None and shape.size is not None:
        return None
    axes_images: dict[int, object] = {}
    axes_mask: dict[int, object] = {}
    if shape.batch is None:
        batch = Dim("batch", min=1)
        axes_images[0] = axes_mask[0] = batch
    if shape.size is None:
        height, width = Dim("height", min=MIN_DYNAMIC_SIDE), Dim("width", min=MIN_DYNAMIC_SIDE)
        axes_images |= {2: height, 3: width}
        axes_mask |= {1: height, 2: width}
    axes = {"images": axes_images, "mask": axes_mask}
    if postprocess:
        axes["target_sizes"] = {0: axes_images[0]} if shape.batch is None else {}
    return axes


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporter's progress lines and the optimiser's log messages, kept off stdout/stderr (stdout may be
    --json)."""
    printed = io.StringIO()
    onnxscript_logger = logging.getLogger("onnxscript")
    level = onnxscript_logger.level
    onnxscript_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(printed), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnxscript_logger.setLevel(level)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    shape: ExportShape = ExportShape(),
    postprocess: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write `model` (in eval mode, on the CPU) to `path` as ONNX, atomically: the file is whole or absent."""

    check_opset(opset)
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: the folder {path.parent} does not exist")
    wrapped = ExportedDETR(model, postprocess).eval()
    names_in = POSTPROCESSED_INPUTS if postprocess else RAW_INPUTS
    names_out = POSTPROCESSED_OUTPUTS if postprocess else RAW_OUTPUTS
    with quiet_exporter():
        try:
            program = torch.onnx.export(
                wrapped,
                example_inputs(shape, postprocess),
                None,
                input_names=list(names_in),
                output_names=list(names_out),
                opset_version=opset,
                dynamic_shapes=dynamic_shapes(shape, postprocess),
                dynamo=True,
                verbose=False,
            )
        except Exception as e:  # the exporter's errors are many classes; each one means "not exportable"
            last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise ExportError(f"torch.onnx.export could not translate the model: {last}") from None
    assert program is not None
    proto = program.model_proto
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=METADATA_PREFIX + key, value=value)
    write_atomic(
        path, lambda f: f.write(proto.SerializeToString()), shared=True
    )  # one file: DETR is far below protobuf's 2 GB


def read_metadata(proto_metadata: Mapping[str, str]) -> dict[str, str]:
    """Our metadata_props (prefix removed) from an ONNX model's metadata map."""
    return {k.removeprefix(METADATA_PREFIX): v for k, v in proto_metadata.items() if k.startswith(METADATA_PREFIX)}


def categories_metadata(categories: Mapping[int, str]) -> str:
    """The categories as stored in the file: JSON [{"id", "name"}], the checkpoint's own format."""
    return json.dumps([{"id": i, "name": n} for i, n in sorted(categories.items())])
