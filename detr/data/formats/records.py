"""What every native reader builds: a COCO-format dict, with image sizes from headers and one path rule.

Readers collect `ImageRecord`s (file name relative to the split's image folder, size when the format gives it,
objects as pixel boxes) and `coco_dict` numbers them: image ids 1..N and annotation ids 1..M in reading order,
category ids 1..N in the order of the class list the reader passes.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypedDict

from PIL import Image, UnidentifiedImageError

from detr.data.decode import ORIENTATION_TAG, ROTATING
from detr.errors import DataError


class CocoImage(TypedDict, total=False):
    id: int
    file_name: str
    width: int
    height: int


class CocoAnnotation(TypedDict, total=False):
    id: int
    image_id: int
    category_id: int
    bbox: list[float]
    area: float
    iscrowd: int
    segmentation: list[list[float]]


class CocoCategory(TypedDict):
    id: int
    name: str


class CocoDict(TypedDict):
    info: dict[str, str]
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[CocoCategory]


@dataclass
class ObjectRecord:
    """One object: its class name, pixel box [x, y, w, h], and the polygon it came from (if any)."""

    label: str
    bbox: tuple[float, float, float, float]
    polygon: list[float] | None = None
    crowd: bool = False


@dataclass
class ImageRecord:
    file_name: str  # posix, relative to the split's image folder (absolute for images outside it)
    width: int | None = None
    height: int | None = None
    objects: list[ObjectRecord] = field(default_factory=list)


def polygon_box(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float, float]:
    """The pixel box [x, y, w, h] that encloses the polygon's points."""
    x0, y0 = min(xs), min(ys)
    return (x0, y0, max(xs) - x0, max(ys) - y0)


def polygon_area(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The shoelace area: what COCO records as a polygon's `area` (COCOeval's small/medium/large)."""
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


def finite(values: Iterable[float], where: str) -> list[float]:
    """The values, or DataError at `where` when one is not a finite number."""
    out = list(values)
    if not all(math.isfinite(v) for v in out):
        raise DataError(f"{where}: a coordinate is not a finite number ({out}): fix or remove the object")
    return out


def displayed_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as a labelling tool shows the image (EXIF rotation applied), from the header only;
    None when the file is missing or unreadable (the dataset check names those files)."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            if im.getexif().get(ORIENTATION_TAG) in ROTATING:  # shown turned by 90°
                width, height = height, width
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError):
        return None
    return width, height


def locate(folder: Path, name: str) -> str:
    """`name` (a tool's path for an image, perhaps with Windows separators or from another machine) as a
    posix path relative to `folder`: the longest tail of it that exists there; else the file itself when it
    is an existing absolute path; else the cleaned name (the dataset check then names it as missing)."""
    clean = name.replace("\\", "/").strip()
    parts = [p for p in PurePosixPath(clean).parts if p not in ("/", ".")]
    if parts and len(parts[0]) == 2 and parts[0].endswith(":"):  # a drive letter, C:
        parts = parts[1:]
    for start in range(len(parts)):
        tail = "/".join(parts[start:])
        if (folder / tail).is_file():
            return tail
    if PurePosixPath(clean).is_absolute() and Path(clean).is_file():
        return clean
    return "/".join(parts)


def coco_dict(records: Sequence[ImageRecord], labels: Sequence[str], image_folder: Path, source: str) -> CocoDict:
    """The COCO dict of `records`; `labels` is the class list (category id = position + 1). Sizes the format
    lacks are read from the image headers under `image_folder`."""
    ids = {name: i + 1 for i, name in enumerate(labels)}
    images: list[CocoImage] = []
    annotations: list[CocoAnnotation] = []
    for image_id, record in enumerate(records, start=1):
        image: CocoImage = {"id": image_id, "file_name": record.file_name}
        size = (record.width, record.height) if record.width and record.height else None
        size = size or displayed_size(image_folder / record.file_name)
        if size:
            image["width"], image["height"] = size
        images.append(image)
        for obj in record.objects:
            x, y, w, h = obj.bbox
            ann: CocoAnnotation = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": ids[obj.label],
                "bbox": [x, y, w, h],
                "area": max(w, 0.0) * max(h, 0.0),
                "iscrowd": int(obj.crowd),
            }
            if obj.polygon:
                ann["segmentation"] = [obj.polygon]
                ann["area"] = polygon_area(obj.polygon[0::2], obj.polygon[1::2])
            annotations.append(ann)
    categories: list[CocoCategory] = [{"id": i + 1, "name": name} for i, name in enumerate(labels)]
    return {"info": {"description": source}, "images": images, "annotations": annotations, "categories": categories}


def parse_xml_root(path: Path) -> ET.Element:
    """The root element of an XML annotation file; DataError naming the line of what is not XML."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        line, column = e.position
        raise DataError(f"{path}:{line}: not valid XML ({str(e).split(':')[0]}, column {column})") from None
