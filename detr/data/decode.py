"""Image decoding: libjpeg-turbo through torchvision (faster than PIL), PIL for whatever it cannot read."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # a torchvision without image codecs: PIL only
    decode_image = None


class CorruptImageError(Exception):
    """An image file that cannot be read or decoded."""


def _decode_pil(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"))
    # A CHW view of HWC memory, the same layout torchvision's decoder returns.
    return torch.from_numpy(array).permute(2, 0, 1)


def read_rgb(path: Path) -> torch.Tensor:
    """Decode an image file into a uint8 tensor 3×H×W (HWC memory); CorruptImageError if unreadable."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise CorruptImageError(f"{path}: {e.strerror or e}") from None
    if decode_image is not None:
        try:
            with warnings.catch_warnings():
                # torchvision 0.29 deprecates its codecs in favour of TorchCodec; they are still the
                # fastest JPEG path here, and the warning would fire in every DataLoader worker.
                warnings.simplefilter("ignore", DeprecationWarning)
                image = decode_image(torch.from_numpy(data), mode=ImageReadMode.RGB)
            # 16-bit PNGs decode to uint16; the pipeline's geometry and normalisation expect uint8.
            return image if image.dtype == torch.uint8 else (image.to(torch.int32) >> 8).to(torch.uint8)
        except RuntimeError:
            pass  # truncated, corrupt, or a format torchvision lacks: let PIL decide
    try:
        return _decode_pil(path)
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"{path}: {e}") from None
