"""Image decoding: libjpeg-turbo through torchvision (faster than PIL), PIL for whatever it cannot read."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

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


ORIENTATION_TAG = 0x0112
ROTATING = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Decode an image file into a uint8 tensor 3×H×W (HWC memory); CorruptImageError if unreadable.

    Pixels are decoded as stored, like the official code. `size`, the (width, height) the annotations
    give, decides for images with an EXIF rotation: when it is the rotated size, the labelling tool showed
    the image upright, so it is decoded upright and the boxes fit.
    """
    image = _read_stored(path)
    if size is not None and (image.shape[-1], image.shape[-2]) == (size[1], size[0]) != tuple(size):
        return _upright(path, image)
    return image


def _upright(path: Path, image: torch.Tensor) -> torch.Tensor:
    """The image turned by its EXIF orientation, if it has a rotating one; else as stored."""
    try:
        with Image.open(path) as im:
            if im.getexif().get(ORIENTATION_TAG) not in ROTATING:
                return image
            array = np.array(ImageOps.exif_transpose(im).convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptImageError(f"{path}: {e}") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def _read_stored(path: Path) -> torch.Tensor:
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
