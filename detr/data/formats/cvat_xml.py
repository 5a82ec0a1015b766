"""CVAT for images XML 1.1: one `annotations.xml`, an `<image name width height>` element per image.

Shapes: `<box xtl ytl xbr ybr>` (a `rotation` in degrees: the box around the turned rectangle), `<polygon
points="x,y;x,y;...">` and `<ellipse cx cy rx ry>` (their enclosing boxes), `<mask left top width height>`
(its extent). Polylines, points, cuboids, skeletons and tags mark no object region and are left out. Class
list: the labels of `<meta>` (`<task>`, `<project>` or `<job>`) in their order, category ids 1..N; without
them, the labels in order of first use. Images with a `subset` attribute (project exports) give the splits
when one subset is Train and another Validation; otherwise a share of the images is held out.
"""

from __future__ import annotations

import functools
import math
import xml.etree.ElementTree as ET
from pathlib import Path

from detr.config import DataConfig
from detr.data.formats.records import (
    CocoDict,
    ImageRecord,
    ObjectRecord,
    coco_dict,
    finite,
    locate,
    parse_xml_root,
    polygon_box,
)
from detr.data.layout import Layout, SplitSource, _held_out
from detr.errors import DataError

FILE = "annotations.xml"
TRAIN_SUBSETS = ("train",)
VAL_SUBSETS = ("validation", "val", "valid")
SHAPES = ("box", "polygon", "ellipse", "mask")  # the others (polyline, points, cuboid, skeleton, tag) are skipped
HEAD_BYTES = 4096


def detect(root: Path, data_cfg: DataConfig) -> Layout | None:
    """ROOT/annotations.xml (or ROOT's one XML file) whose root element is <annotations>, images in ROOT/images."""
    xml = root / FILE
    if not xml.is_file():
        others = [p for p in sorted(root.glob("*.xml")) if is_cvat(p)]
        if len(others) != 1:
            return None
        xml = others[0]
    elif not is_cvat(xml):
        return None
    images = root / "images" if (root / "images").is_dir() else root
    fraction = data_cfg.val_fraction
    subsets = {s.lower(): s for s in _parse(xml, xml.stat().st_mtime_ns).subsets}
    train_subset = next((subsets[s] for s in TRAIN_SUBSETS if s in subsets), None)
    val_subset = next((subsets[s] for s in VAL_SUBSETS if s in subsets), None)
    if train_subset and val_subset:
        train = SplitSource(images, xml, format="cvat-xml", subset=train_subset)
        val = SplitSource(images, xml, format="cvat-xml", subset=val_subset)
        unused = sorted(set(subsets.values()) - {train_subset, val_subset})
        note = f"subset {', '.join(unused)} not used" if unused else ""
        return Layout("cvat-xml", root, train, val, fraction, note)
    train, val = _held_out(SplitSource(images, xml, format="cvat-xml"))
    return Layout("cvat-xml", root, train, val, fraction)


def is_cvat(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    return b"<annotations>" in head and (b"<version>" in head or b"<meta>" in head)


class CvatFile:
    """A parsed annotations.xml: its class list, its images (as records, with subset) and subset names."""

    def __init__(self, labels: list[str], images: list[tuple[str, ImageRecord]]) -> None:
        self.labels = labels
        self.images = images
        self.subsets = sorted({subset for subset, _ in images if subset})


def read(source: SplitSource) -> CocoDict:
    parsed = _parse(source.annotations, source.annotations.stat().st_mtime_ns)
    records = []
    for subset, record in parsed.images:
        if source.subset and subset != source.subset:
            continue
        records.append(
            ImageRecord(locate(source.images, record.file_name), record.width, record.height, record.objects)
        )
    return coco_dict(records, parsed.labels, source.images, str(source.annotations))


@functools.lru_cache(maxsize=2)
def _parse(path: Path, mtime_ns: int) -> CvatFile:  # noqa: ARG001 - the cache key
    root = parse_xml_root(path)
    if root.tag != "annotations":
        raise DataError(f"{path}: not a CVAT XML file (its root element is <{root.tag}>, not <annotations>)")
    if root.find("image") is None and root.find("track") is not None:
        raise DataError(f"{path}: a CVAT for video export (<track> elements): export the task as CVAT for images")
    declared = [(n.text or "").strip() for n in root.iterfind("meta//labels/label/name")]
    labels = list(dict.fromkeys(n for n in declared if n))
    images = []
    for number, image in enumerate(root.iterfind("image"), start=1):
        name = image.get("name")
        if not name:
            raise DataError(f"{path}: <image> {number} has no name attribute")
        where = f"{path}: <image name={name!r}>"
        record = ImageRecord(name, _size(image.get("width")), _size(image.get("height")))
        for k, shape in enumerate(image, start=1):
            if shape.tag not in SHAPES:
                continue
            label = shape.get("label") or ""
            if label not in labels:
                if declared:
                    raise DataError(
                        f"{where} <{shape.tag}> {k}: label {label!r} is not among the labels in <meta> "
                        f"({', '.join(labels[:4])}{', ...' if len(labels) > 4 else ''}): fix the label"
                    )
                labels.append(label)
            record.objects.append(_object(shape, label, f"{where} <{shape.tag}> {k}"))
        images.append((image.get("subset") or "", record))
    return CvatFile(labels, images)


def _size(text: str | None) -> int | None:
    try:
        value = int(float(text or ""))
    except ValueError:
        return None
    return value if value > 0 else None


def _numbers(shape: ET.Element, keys: tuple[str, ...], where: str) -> list[float]:
    try:
        return finite((float(shape.get(k) or "") for k in keys), where)
    except ValueError:
        raise DataError(f"{where}: needs numbers in {', '.join(keys)}") from None


def _rotation(shape: ET.Element, where: str) -> float:
    """The shape's `rotation` (degrees, clockwise about its centre) in radians; 0 when absent."""
    if shape.get("rotation") is None:
        return 0.0
    return math.radians(_numbers(shape, ("rotation",), where)[0])


def _object(shape: ET.Element, label: str, where: str) -> ObjectRecord:
    if shape.tag == "box":
        xtl, ytl, xbr, ybr = _numbers(shape, ("xtl", "ytl", "xbr", "ybr"), where)
        angle = _rotation(shape, where)
        if angle:
            cx, cy, hw, hh = (xtl + xbr) / 2, (ytl + ybr) / 2, (xbr - xtl) / 2, (ybr - ytl) / 2
            dx = abs(hw * math.cos(angle)) + abs(hh * math.sin(angle))
            dy = abs(hw * math.sin(angle)) + abs(hh * math.cos(angle))
            return ObjectRecord(label, (cx - dx, cy - dy, 2 * dx, 2 * dy))
        return ObjectRecord(label, (xtl, ytl, xbr - xtl, ybr - ytl))
    if shape.tag == "polygon":
        try:
            pairs = [p.split(",") for p in (shape.get("points") or "").split(";") if p.strip()]
            xs = finite((float(x) for x, _ in pairs), where)
            ys = finite((float(y) for _, y in pairs), where)
        except ValueError:
            raise DataError(f"{where}: points must read x,y;x,y;... ({(shape.get('points') or '')[:40]!r})") from None
        if len(xs) < 3:
            raise DataError(f"{where}: a polygon needs at least 3 points, it has {len(xs)}")
        return ObjectRecord(label, polygon_box(xs, ys), [v for xy in zip(xs, ys) for v in xy])
    if shape.tag == "ellipse":
        cx, cy, rx, ry = _numbers(shape, ("cx", "cy", "rx", "ry"), where)
        angle = _rotation(shape, where)
        dx = math.hypot(rx * math.cos(angle), ry * math.sin(angle))
        dy = math.hypot(rx * math.sin(angle), ry * math.cos(angle))
        return ObjectRecord(label, (cx - dx, cy - dy, 2 * dx, 2 * dy))
    left, top, width, height = _numbers(shape, ("left", "top", "width", "height"), where)
    return ObjectRecord(label, (left, top, width, height))
