"""Image decoding: libjpeg-turbo through torchvision (faster than PIL), PIL for whatever it cannot read."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from detr.config import DataConfig

try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # a torchvision without image codecs: PIL only
    decode_image = None


# [data] max_image_pixels' default, PIL's decompression-bomb threshold (it warns above it, refuses above twice
# it): torchvision's decoder has none, and a 0.9 MB PNG can decode to 10 GB.
DEFAULT_MAX_PIXELS = DataConfig.max_image_pixels


class CorruptImageError(Exception):
    """An image file that cannot be read or decoded."""


class OversizedImageError(CorruptImageError):
    """An image whose header promises more pixels than [data] max_image_pixels: never decoded."""


def header_size(source: Path | bytes) -> tuple[int, int] | None:
    """(width, height) from the image header alone (PIL opens lazily); None when PIL cannot identify it.
    Past twice its MAX_IMAGE_PIXELS PIL refuses even the header: (pixels, 1) from its message then."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                return im.size
    except Image.DecompressionBombError as e:
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        return (int(pixels.group(1)), 1) if pixels else None
    except (OSError, ValueError, SyntaxError):
        return None


def check_pixels(path: Path, size: tuple[int, int] | None, max_pixels: int) -> None:
    """OversizedImageError naming `path` when `size` (width, height) has more than `max_pixels` (0: no limit)."""
    if size is None or max_pixels <= 0 or size[0] * size[1] <= max_pixels:
        return
    shape = f"{size[0]}×{size[1]} = " if size[1] > 1 else ""
    raise OversizedImageError(
        f"{path}: {shape}{size[0] * size[1]:,} pixels, more than [data] max_image_pixels = {max_pixels:,}; "
        "not decoded (shrink the image, or raise the limit if it is real)"
    )


def _decode_pil(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"))
    # A CHW view of HWC memory, the same layout torchvision's decoder returns.
    return torch.from_numpy(array).permute(2, 0, 1)


ORIENTATION_TAG = 0x0112
ROTATING = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def read_rgb(path: Path, size: tuple[int, int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """Decode an image file into a uint8 tensor 3×H×W (HWC memory); CorruptImageError if unreadable,
    OversizedImageError (from the header, before decoding) when it has more than `max_pixels` pixels.

    Pixels are decoded as stored, like the official code. `size`, the (width, height) the annotations
    give, decides for images with an EXIF rotation: when it is the rotated size, the labelling tool showed
    the image upright, so it is decoded upright and the boxes fit.
    """
    image = _read_stored(path, max_pixels)
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


def _read_stored(path: Path, max_pixels: int) -> torch.Tensor:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise CorruptImageError(f"{path}: {e.strerror or e}") from None
    check_pixels(path, header_size(data.tobytes()), max_pixels)
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
