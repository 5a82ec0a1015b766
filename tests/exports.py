"""Small dataset exports as the labelling tools write them, for the custom-dataset tests.

Each image is a flat colour with one brighter rectangle per object, in the mode the test asks for.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# Roboflow lists the dataset itself as category 0, the supercategory of the real ones; ids have gaps.
ROBOFLOW_CATEGORIES = [
    {"id": 0, "name": "cells", "supercategory": "none"},
    {"id": 1, "name": "red", "supercategory": "cells"},
    {"id": 5, "name": "white", "supercategory": "cells"},
    {"id": 17, "name": "platelet", "supercategory": "cells"},
]
# A crowd object in COCO's run-length encoding, as pycocotools writes it.
CROWD_RLE = {"counts": [20, 10, 30, 10, 30], "size": [40, 60]}
MODES = ("RGB", "L", "CMYK", "P", "RGBA")  # CMYK stays JPEG; palette and alpha need PNG


def write_image(
    path: Path, width: int, height: int, mode: str = "RGB", boxes: tuple = (), orientation: int | None = None
) -> None:
    pixels = np.full((height, width, 3), 70, np.uint8)
    for x, y, w, h in boxes:
        pixels[int(y) : int(y + h), int(x) : int(x + w)] = 200
    image = Image.fromarray(pixels).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = None
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
    kwargs: dict[str, Any] = {"exif": exif} if exif is not None else {}
    image.save(path, **kwargs)


def coco_json(images: list[dict], annotations: list[dict], categories: list[dict]) -> dict:
    for i, ann in enumerate(annotations):
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3])
    return {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories}


def messy_split(folder: Path, prefix: str, count: int, categories: list[dict], file_prefix: str = "") -> dict:
    """`count` images cycling through the modes, each with two objects of the non-parent categories, plus the
    hard cases: a crowd RLE, a zero-width box and a box past the border."""
    ids = [c["id"] for c in categories if c["supercategory"] != "none"]
    images, annotations = [], []
    for i in range(count):
        mode = MODES[i % len(MODES)]
        name = f"{prefix}{i}.{'jpg' if mode in ('RGB', 'L', 'CMYK') else 'png'}"
        w, h = (60, 40) if i % 2 else (40, 60)
        boxes = [(4, 4, 16, 12), (22, 20, 14, 16)]
        write_image(folder / name, w, h, mode, boxes)
        images.append({"id": i + 1, "file_name": file_prefix + name, "width": w, "height": h})
        for j, box in enumerate(boxes):
            annotations.append({"image_id": i + 1, "category_id": ids[(i + j) % len(ids)], "bbox": list(box)})
    annotations.append(
        {"image_id": 1, "category_id": ids[0], "bbox": [0, 0, 30, 20], "iscrowd": 1, "segmentation": CROWD_RLE}
    )
    annotations.append({"image_id": 2, "category_id": ids[0], "bbox": [10, 10, 0, 8]})  # zero width
    annotations.append({"image_id": 3, "category_id": ids[-1], "bbox": [30, 30, 40, 40]})  # past the border
    return coco_json(images, annotations, categories)


def roboflow_export(root: Path, train: int = 6, valid: int = 3) -> Path:
    """ROOT/{train,valid}/ with _annotations.coco.json beside the images."""
    for split, count in (("train", train), ("valid", valid)):
        data = messy_split(root / split, f"{split}_", count, ROBOFLOW_CATEGORIES)
        (root / split / "_annotations.coco.json").write_text(json.dumps(data))
    return root


def cvat_export(root: Path, count: int = 10, categories: list[dict] | None = None) -> Path:
    """ROOT/annotations/instances_default.json + ROOT/images/ (CVAT's "COCO 1.0" export); ids 1, 2, 3."""
    categories = categories or [{"id": i, "name": n, "supercategory": ""} for i, n in ((1, "a"), (2, "b"), (3, "c"))]
    data = messy_split(root / "images", "frame_", count, categories)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return root


def label_studio_export(root: Path, count: int = 5) -> Path:
    """ROOT/result.json whose file names start with images/, as Label Studio writes them."""
    categories = [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]
    for c in categories:
        c["supercategory"] = ""
    data = messy_split(root / "images", "", count, categories, file_prefix="images/")
    (root / "result.json").write_text(json.dumps(data))
    return root


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A 1-bit PNG of side × side black pixels: about 0.1 MB on disk, 2.7 GB as decoded RGB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path
