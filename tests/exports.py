"""Small dataset exports as the labelling tools write them, for the custom-dataset tests.

Each image is a flat colour with one brighter rectangle per object, in the mode the test asks for.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
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


# ---------------------------------------------------------------- COCO layouts and messy COCO files


def clean_coco_split(folder: Path, count: int, prefix: str = "img_", categories: list[dict] | None = None) -> dict:
    """`count` images of 60×40 or 40×60 in `folder`, two objects each (categories 1 and 2 by default)."""
    categories = categories or [
        {"id": 1, "name": "a", "supercategory": ""},
        {"id": 2, "name": "b", "supercategory": ""},
    ]
    ids = [c["id"] for c in categories]
    images, annotations = [], []
    for i in range(count):
        w, h = (60, 40) if i % 2 else (40, 60)
        name = f"{prefix}{i}.jpg"
        boxes = [(4, 4, 16, 12), (22, 20, 14, 16)]
        write_image(folder / name, w, h, boxes=boxes)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for j, box in enumerate(boxes):
            annotations.append({"image_id": i + 1, "category_id": ids[(i + j) % len(ids)], "bbox": list(box)})
    return coco_json(images, annotations, categories)


def write_json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco_export(
    root: Path,
    train: int = 6,
    val: int = 3,
    annotations: tuple[str, str] = ("annotations/instances_train2017.json", "annotations/instances_val2017.json"),
    folders: tuple[str, str] = ("train2017", "val2017"),
) -> Path:
    """A COCO-format export: two annotation files and two image folders, at the paths given (relative to ROOT);
    the defaults are COCO's own layout."""
    for count, ann, folder in ((train, annotations[0], folders[0]), (val, annotations[1], folders[1])):
        write_json(root / ann, clean_coco_split(root / folder, count, prefix=f"{Path(folder).name}_"))
    return root


def instances_split_export(root: Path) -> Path:
    """annotations/instances_{train,val}.json beside train/ and val/ (COCO named after plain split folders)."""
    return coco_export(
        root,
        annotations=("annotations/instances_train.json", "annotations/instances_val.json"),
        folders=("train", "val"),
    )


def tutorial_export(root: Path) -> Path:
    """The official DETR fine-tuning tutorial's layout: annotations/custom_{train,val}.json + train2017/ val2017/."""
    return coco_export(root, annotations=("annotations/custom_train.json", "annotations/custom_val.json"))


def edit_train(root: Path, edit: Callable[[dict], None], file: str = "annotations/instances_train2017.json") -> Path:
    """Apply `edit` to a training annotation file in place (the generators' files, never a user's)."""
    path = root / file
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def string_image_ids(data: dict) -> None:
    for img in data["images"]:
        img["id"] = f"img-{img['id']}"
    for ann in data["annotations"]:
        ann["image_id"] = f"img-{ann['image_id']}"


def float_image_ids(data: dict) -> None:
    for img in data["images"]:
        img["id"] = float(img["id"])


def mixed_image_ids(data: dict) -> None:
    data["images"][1]["id"] = str(data["images"][1]["id"])


def null_image_id(data: dict) -> None:
    data["images"][2]["id"] = None


def duplicate_image_id(data: dict) -> None:
    data["images"][1]["id"] = data["images"][0]["id"]


def string_category_ids(data: dict) -> None:
    for cat in data["categories"]:
        cat["id"] = str(cat["id"])


def iscrowd_yes(data: dict) -> None:
    data["annotations"][3]["iscrowd"] = "yes"


def no_images(data: dict) -> None:
    data["images"], data["annotations"] = [], []


def nan_box(data: dict) -> None:
    data["annotations"][0]["bbox"] = [1, 2, float("nan"), 4]


def boxes_outside(data: dict) -> None:
    """A third of the boxes wholly outside their declared image, as when boxes are in another image's pixels."""
    for ann in data["annotations"][::3]:
        ann["bbox"] = [100 + ann["bbox"][0], 90, 10, 10]


def images_without_boxes(data: dict) -> None:
    kept = {img["id"] for img in data["images"][::2]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]


def windows_paths(root: Path, folder: str = "train2017", file: str = "annotations/instances_train2017.json") -> None:
    r"""Move the images into folder/images/ and name them images\x.jpg, as Label Studio on Windows writes."""

    def edit(data: dict) -> None:
        for img in data["images"]:
            (root / folder / "images").mkdir(exist_ok=True)
            (root / folder / img["file_name"]).rename(root / folder / "images" / img["file_name"])
            img["file_name"] = "images\\" + img["file_name"]

    edit_train(root, edit, file)


def deep_json(path: Path, depth: int = 100_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"images": ' + "[" * depth + "]" * depth + ', "annotations": [], "categories": []}')
    return path
