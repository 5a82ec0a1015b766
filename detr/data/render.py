"""Drawing one synthetic detection image: coloured shapes on a low-contrast textured background.

Built to be learnable in minutes by a small DETR trained from scratch: 1–4 objects of 15–45% of the
shorter side, each class a distinct shape in its own colour (jittered), so recognising the class is easy
and the work left is localisation; overlap is limited and some objects run off the border. Boxes are
pixel-exact: the extent of the drawn pixels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CATEGORY_NAMES = ("circle", "square", "triangle", "ring", "cross", "diamond")
# One saturated colour per category, in CATEGORY_NAMES order; backgrounds are desaturated greys.
COLOURS = np.array(
    [(220, 40, 40), (40, 170, 60), (40, 80, 230), (240, 200, 30), (200, 50, 200), (30, 200, 210)], dtype=np.float64
)
MAX_IOU, MAX_COVER = 0.3, 0.5  # overlap limits between objects (IoU, and share of the smaller box)


def synthetic_categories() -> list[dict]:
    """The COCO categories of the synthetic dataset: ids 1..K (a model needs num_classes = K + 1)."""
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORY_NAMES)]


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A desaturated base colour with soft blotches and faint stripes, uint8 H×W×3.

    The texture is a smooth luminance offset: computed at a fraction of the resolution, upsampled by
    PIL as one channel and coloured through a palette (base colour + offset), all in C — about a
    millisecond instead of the tens that per-pixel float work on the full RGB image costs.
    """
    base = rng.uniform(70, 170) + rng.uniform(-15, 15, size=3)
    grid = rng.uniform(-1, 1, size=(rng.integers(3, 7), rng.integers(3, 7))).astype(np.float32)
    blotch_amp, stripe_amp = rng.uniform(10, 25), rng.uniform(3, 8)
    angle, period, phase = rng.uniform(0, np.pi), rng.uniform(0.05, 0.2) * max(h, w), rng.uniform(0, 2 * np.pi)
    factor = max(1, min(h, w) // 48)  # keeps ≥ 6 low-resolution pixels per stripe period
    lh, lw = -(-h // factor), -(-w // factor)
    blotches = np.asarray(Image.fromarray(grid).resize((lw, lh), Image.Resampling.BILINEAR))
    ys, xs = np.ogrid[:lh, :lw]
    freq = 2 * np.pi / period * factor
    stripes = np.sin(xs * (freq * np.cos(angle)) + ys * (freq * np.sin(angle)) + phase)
    offset = np.clip(blotches * blotch_amp + stripes * stripe_amp + 128, 0, 255).astype(np.uint8)
    palette = np.clip(base[None, :] + np.arange(-128, 128)[:, None], 0, 255).astype(np.uint8)
    texture = Image.fromarray(offset).resize((w, h), Image.Resampling.BILINEAR)
    texture.putpalette(palette.tobytes())
    return np.array(texture.convert("RGB"))


def _shape_mask(kind: str, x: np.ndarray, y: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Inside-test of a shape centred at 0 with half-extents (rx, ry), at pixel centres x, y."""
    u, v = x / rx, y / ry
    if kind == "circle":
        return u * u + v * v <= 1
    if kind == "square":
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if kind == "triangle":  # apex up, base at the bottom
        return (v <= 1) & (np.abs(u) <= (v + 1) / 2)
    if kind == "ring":
        r2 = u * u + v * v
        return (r2 <= 1) & (r2 >= 0.3)
    if kind == "cross":
        return ((np.abs(u) <= 1) & (np.abs(v) <= 0.3)) | ((np.abs(v) <= 1) & (np.abs(u) <= 0.3))
    return np.abs(u) + np.abs(v) <= 1  # diamond


def _iou_cover(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area_a + area_b - inter), inter / min(area_a, area_b)


def render_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[dict]]:
    """An H×W×3 uint8 image and its objects: [{category_id, bbox [x, y, w, h], area}], pixel-exact."""
    image = _background(rng, h, w)
    placed: list[np.ndarray] = []
    objects = []
    for _ in range(rng.integers(1, 5)):
        for _attempt in range(20):
            kind = int(rng.integers(len(CATEGORY_NAMES)))
            size = rng.uniform(0.15, 0.45) * min(h, w)
            aspect = 1.0 if CATEGORY_NAMES[kind] in ("circle", "square", "ring") else rng.uniform(0.8, 1.25)
            rx, ry = size / 2 * np.sqrt(aspect), size / 2 / np.sqrt(aspect)
            # Up to 40% of an object may lie past the border: some objects are cut by it.
            cx, cy = rng.uniform(0.2 * rx, w - 0.2 * rx), rng.uniform(0.2 * ry, h - 0.2 * ry)
            box = np.array([cx - rx, cy - ry, cx + rx, cy + ry])
            if all(iou <= MAX_IOU and cover <= MAX_COVER for iou, cover in (_iou_cover(box, p) for p in placed)):
                break
        else:
            continue
        x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
        x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
        ys, xs = np.ogrid[y0:y1, x0:x1]
        mask = _shape_mask(CATEGORY_NAMES[kind], xs + 0.5 - cx, ys + 0.5 - cy, rx, ry)
        if mask.sum() < 16:
            continue
        colour = COLOURS[kind] + rng.uniform(-20, 20, size=3)
        np.copyto(image[y0:y1, x0:x1], np.clip(colour, 0, 255).astype(np.uint8), where=mask[:, :, None])
        cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
        bx, by = x0 + int(cols[0]), y0 + int(rows[0])
        bw, bh = int(cols[-1]) + 1 - int(cols[0]), int(rows[-1]) + 1 - int(rows[0])
        placed.append(box)
        objects.append({"category_id": kind + 1, "bbox": [bx, by, bw, bh], "area": int(mask.sum())})
    return image, objects
