"""Boxes drawn with torchvision's `draw_bounding_boxes`, for `predict` and `triage`: a stable colour per class (or
one colour per layer), labels sized to the image, small images enlarged so their labels stay readable."""

from __future__ import annotations

import colorsys
import functools
import math
from collections.abc import Sequence

import torch

FONT_CANDIDATES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "Arial.ttf", "Helvetica.ttc")
MIN_SIDE = 256  # smaller images are enlarged (whole pixels) so their labels stay readable
GAP = 8  # pixels of white between the ground truth and the predictions


@functools.cache
def label_font() -> str | None:
    """A TrueType font PIL can find (scalable labels), or None: torchvision then uses PIL's small bitmap font."""
    from PIL import ImageFont

    for name in FONT_CANDIDATES:
        try:
            ImageFont.truetype(name, 10)
        except OSError:
            continue
        return name
    return None


@functools.cache
def label_fill_supported() -> bool:
    import inspect

    from torchvision.utils import draw_bounding_boxes

    return "fill_labels" in inspect.signature(draw_bounding_boxes).parameters


def class_colour(category_id: int) -> tuple[int, int, int]:
    """The same colour for a class in every image and run: hues spread by the golden ratio."""
    hue = (category_id * 0.6180339887) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return round(r * 255), round(g * 255), round(b * 255)


def text_colour(background: tuple[int, int, int]) -> str:
    """Black on light label backgrounds, white on dark ones (relative luminance, Rec. 709 weights)."""
    r, g, b = background
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 150 else "white"


def enlarged(image: torch.Tensor, min_side: int = MIN_SIDE) -> tuple[torch.Tensor, int]:
    """`image` (uint8 3×H×W) repeated by a whole factor until its longer side reaches `min_side`, and the factor."""
    factor = math.ceil(min_side / max(image.shape[-2:]))
    if factor <= 1:
        return image, 1
    return image.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1), factor


def draw_boxes(
    image: torch.Tensor,
    boxes: torch.Tensor,
    category_ids: Sequence[int],
    texts: Sequence[str],
    colour: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """`image` (uint8 3×H×W, already enlarged) with xyxy pixel `boxes`, labelled with `texts` and coloured by class,
    or all in `colour` (triage tells targets from predictions by colour)."""
    from torchvision.utils import draw_bounding_boxes

    if len(boxes) == 0:
        return image.clone()
    side = max(image.shape[-2:])
    font = label_font()
    colours = [colour] * len(boxes) if colour else [class_colour(c) for c in category_ids]
    # Labels on a filled background in the box's colour (torchvision >= 0.22), else in the box's colour.
    filled = {"label_colors": [text_colour(c) for c in colours], "fill_labels": True} if label_fill_supported() else {}
    return draw_bounding_boxes(
        image,
        boxes,
        labels=list(texts),
        colors=colours,
        width=max(1, round(side / 320)),
        font=font,
        font_size=max(11, round(side / 45)) if font else None,
        **filled,
    )


def side_by_side(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Two images of the same height, left | white gap | right."""
    gap = torch.full((3, left.shape[-2], GAP), 255, dtype=left.dtype)
    return torch.cat([left, gap, right], dim=-1)
