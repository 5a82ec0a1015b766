"""VIA (VGG Image Annotator) 2.x JSON: a project file (`_via_img_metadata`) or its "annotations as JSON" export
(the same per-image entries at the top level), each entry an image's `filename` and its `regions`.

Regions: `rect` (x, y, width, height), `polygon` (all_points_x, all_points_y), `circle` and `ellipse` (their
enclosing boxes); points and polylines mark no object region and are left out. VIA has no class field: the
class is one region attribute, chosen the same way for every file of the dataset (`class_attribute`); a
dataset whose regions carry no attribute at all has one class, "object". Category ids are 1..N over the sorted
class names of all the dataset's VIA files (every split agrees). VIA records no image sizes: they are read
from the image headers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from detr.config import DataConfig
from detr.data.formats.records import (
    CocoDict,
    ImageRecord,
    ObjectRecord,
    coco_dict,
    finite,
    locate,
    polygon_box,
)
from detr.data.layout import ROBOFLOW_VAL, Layout, SplitSource, _held_out
from detr.errors import DataError

# The class attribute: the first of these names (any case) that regions use, else the first attribute
# declared in the project's `_via_attributes`, else the first in sorted order.
CLASS_NAMES = ("class", "label", "category", "name", "type", "object")
ONE_CLASS = "object"
SKIPPED = ("point", "polyline")
HEAD_BYTES = 4096
VIA3_KEYS = ("project", "config", "attribute", "file", "metadata")


def detect(root: Path, data_cfg: DataConfig) -> Layout | None:
    """One VIA JSON in ROOT/train/ and one in ROOT/val/ (or valid/), else one in ROOT."""
    fraction = data_cfg.val_fraction
    train_file = _one_via_file(root / "train")
    val_file = next((f for v in ROBOFLOW_VAL if (f := _one_via_file(root / v))), None)
    if train_file and val_file:
        train = SplitSource(image_folder(train_file), train_file, format="via", siblings=(val_file,))
        val = SplitSource(image_folder(val_file), val_file, format="via", siblings=(train_file,))
        return Layout("via", root, train, val, fraction, _class_note((train_file, val_file)))
    single = _one_via_file(root, required=True)
    if single is None:
        return None
    train, val = _held_out(SplitSource(image_folder(single), single, format="via"))
    return Layout("via", root, train, val, fraction, _class_note((single,)))


def _one_via_file(folder: Path, required: bool = False) -> Path | None:
    if not folder.is_dir():
        return None
    found = [p for p in sorted(folder.glob("*.json")) if p.is_file() and is_via(p)]
    if len(found) > 1 and required:
        names = ", ".join(p.name for p in found[:4])
        raise DataError(f"{folder}: several VIA files ({names}): keep one (VIA's project file holds every image)")
    return found[0] if len(found) == 1 else None


def is_via(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    return b'"_via_' in head or (b'"filename"' in head and b'"regions"' in head)


def image_folder(via_file: Path) -> Path:
    """The via file's folder, or its images/ when the file names are found there."""
    folder, images = via_file.parent, via_file.parent / "images"
    if not images.is_dir():
        return folder
    first = next(iter(entries(via_file)), None)
    name = str(first[1].get("filename", "")) if first else ""
    return images if name and not (folder / locate(folder, name)).is_file() else folder


def _class_note(files: Sequence[Path]) -> str:
    attribute = class_attribute(files)
    return (
        f"class from region attribute {attribute!r}" if attribute else f"no region attributes: one class {ONE_CLASS!r}"
    )


@functools.lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int) -> Any:  # noqa: ARG001 - the cache key
    from detr.data.validate import read_json

    return read_json(path, encoding="utf-8-sig")


def _data(path: Path) -> Any:
    return _load(path, path.stat().st_mtime_ns)


def entries(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(key, entry) of every image of a VIA file, in file order; DataError when it is not VIA 2."""
    data = _data(path)
    if isinstance(data, dict) and all(k in data for k in VIA3_KEYS):
        raise DataError(f"{path}: a VIA 3 project: export it from VIA 2 (or as COCO), which detrdoctor reads")
    metadata = data.get("_via_img_metadata", data) if isinstance(data, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, dict) and "filename" in v for v in metadata.values()):
        raise DataError(f"{path}: not a VIA 2 file: expected _via_img_metadata, or entries with filename and regions")
    return list(metadata.items())


def _regions(entry: dict[str, Any]) -> list[Any]:
    regions = entry.get("regions") or []
    return list(regions.values()) if isinstance(regions, dict) else list(regions)  # VIA 1 keyed them "0", "1"


def class_attribute(files: Iterable[Path]) -> str | None:
    """The region attribute that names the class (see CLASS_NAMES), the same for every file of a dataset;
    None when no region carries an attribute."""
    used: set[str] = set()
    declared: list[str] = []
    for path in files:
        data = _data(path)
        region_attributes = data.get("_via_attributes", {}).get("region", {}) if isinstance(data, dict) else {}
        if isinstance(region_attributes, dict):
            declared.extend(k for k in region_attributes if k not in declared)
        for _, entry in entries(path):
            for region in _regions(entry):
                attributes = region.get("region_attributes") if isinstance(region, dict) else None
                if isinstance(attributes, dict):
                    used.update(k for k, v in attributes.items() if v not in ("", None, {}))
    if not used:
        return None
    by_name = {k.lower(): k for k in sorted(used)}
    preferred = next((by_name[n] for n in CLASS_NAMES if n in by_name), None)
    return preferred or next((k for k in declared if k in used), None) or sorted(used)[0]


def read(source: SplitSource) -> CocoDict:
    files = (source.annotations, *source.siblings)
    attribute = class_attribute(files)
    labels = sorted({obj.label for path in files for record in _records(path, attribute) for obj in record.objects})
    records = [
        ImageRecord(locate(source.images, r.file_name), objects=r.objects)
        for r in _records(source.annotations, attribute)
    ]
    return coco_dict(records, labels, source.images, str(source.annotations))


def _records(path: Path, attribute: str | None) -> list[ImageRecord]:
    records = []
    for key, entry in entries(path):
        name = str(entry["filename"])
        if name.startswith(("http://", "https://")):
            raise DataError(f"{path}: image {key!r} is a URL ({name[:60]}): download the images beside the file")
        record = ImageRecord(name)
        for k, region in enumerate(_regions(entry), start=1):
            where = f"{path}: {name} region {k}"
            if not isinstance(region, dict) or not isinstance(region.get("shape_attributes"), dict):
                raise DataError(f"{where}: no shape_attributes: not a VIA 2 region")
            shape = region["shape_attributes"]
            if shape.get("name") in SKIPPED:
                continue
            label = _label(region.get("region_attributes"), attribute, where)
            record.objects.append(ObjectRecord(label, *_geometry(shape, where)))
        records.append(record)
    return records


def _label(attributes: Any, attribute: str | None, where: str) -> str:
    if attribute is None:
        return ONE_CLASS
    value = attributes.get(attribute) if isinstance(attributes, dict) else None
    if isinstance(value, dict):  # a checkbox attribute: {"option": true}
        chosen = [k for k, v in value.items() if v]
        value = chosen[0] if len(chosen) == 1 else None
    if not isinstance(value, (str, int, float)) or not str(value).strip():
        raise DataError(
            f"{where}: no single value of the class attribute {attribute!r}: set it in VIA (region attributes)"
        )
    return str(value).strip()


def _geometry(shape: dict[str, Any], where: str) -> tuple[tuple[float, float, float, float], list[float] | None]:
    kind = shape.get("name")
    keys = {"rect": ("x", "y", "width", "height"), "circle": ("cx", "cy", "r"), "ellipse": ("cx", "cy", "rx", "ry")}
    if kind == "polygon":
        xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
        if not (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys) >= 3):
            raise DataError(f"{where}: a polygon needs all_points_x and all_points_y of 3 or more points each")
        xs, ys = _numbers(xs, where), _numbers(ys, where)
        return polygon_box(xs, ys), [v for xy in zip(xs, ys) for v in xy]
    if kind not in keys:
        raise DataError(f"{where}: shape {kind!r} is not one detrdoctor reads (rect, polygon, circle, ellipse)")
    values = _numbers([shape.get(k) for k in keys[kind]], where)
    if kind == "rect":
        x, y, w, h = values
        return (x, y, w, h), None
    if kind == "circle":
        cx, cy, r = values
        return (cx - r, cy - r, 2 * r, 2 * r), None
    cx, cy, rx, ry = values
    theta = _numbers([shape.get("theta", 0)], where)[0]
    dx = math.hypot(rx * math.cos(theta), ry * math.sin(theta))
    dy = math.hypot(rx * math.sin(theta), ry * math.cos(theta))
    return (cx - dx, cy - dy, 2 * dx, 2 * dy), None


def _numbers(values: list[Any], where: str) -> list[float]:
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise DataError(f"{where}: coordinates must be numbers ({str(values)[:60]})")
    return finite((float(v) for v in values), where)
