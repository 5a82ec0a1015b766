"""Locating and loading a COCO annotation file, with one-line errors instead of tracebacks."""

from __future__ import annotations

import contextlib
import functools
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pycocotools.coco import COCO

from detr.errors import DataError

if TYPE_CHECKING:
    from detr.data.layout import SplitSource

REQUIRED_KEYS = ("images", "annotations", "categories")


def _check_entries(data: dict, path: Path) -> None:
    """The fields training and evaluation read, so a malformed entry fails here and not mid-epoch."""
    for img in data["images"]:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            raise DataError(f"{path}: not COCO: an entry of 'images' lacks 'id' or 'file_name' ({str(img)[:80]})")
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not {"image_id", "category_id", "bbox"} <= ann.keys():
            raise DataError(
                f"{path}: not COCO: an entry of 'annotations' lacks 'image_id', 'category_id' "
                f"or 'bbox' ({str(ann)[:80]})"
            )
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise DataError(
                f"{path}: not COCO: annotation {ann.get('id', '?')} has bbox {str(bbox)[:40]}, not [x, y, w, h]"
            )
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat:
            raise DataError(f"{path}: not COCO: an entry of 'categories' lacks 'id' ({str(cat)[:80]})")


@functools.lru_cache(maxsize=2)
def _load(path: Path, mtime_ns: int, size: int) -> COCO:  # noqa: ARG001 - the cache key
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: not COCO: the top level is not an object with {', '.join(REQUIRED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if not isinstance(data.get(k), list)]
    if missing:
        also = f" (nor {', '.join(missing[1:])})" if missing[1:] else ""
        raise DataError(f"{path}: not COCO: no list '{missing[0]}'{also}")
    return _indexed(data, path)


def _indexed(data: dict, path: Path) -> COCO:
    _check_entries(data, path)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return coco


def load_coco(path: Path) -> COCO:
    """The parsed and indexed annotation file; DataError naming the file if it is missing or not COCO.

    The last two files stay cached (keyed by path, mtime and size), so checking a dataset and then
    building it parses the JSON once.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    if not path.is_file():
        raise DataError(f"{path}: annotation path is not a file")
    return _load(path.resolve(), stat.st_mtime_ns, stat.st_size)


def dataset_categories(coco: COCO) -> list[dict]:
    """The categories of an annotation file as [{"id", "name"}] sorted by id: what checkpoints carry, so that
    a model's labels (the dataset's own category ids) keep their names. A category without a name gets its id."""
    return [{"id": int(i), "name": str(coco.cats[i].get("name", i))} for i in sorted(coco.cats)]


def load_source(source: SplitSource) -> COCO:
    """The annotations of a split's source, in any format `detr.data.formats` reads, as an indexed COCO.

    A COCO file is `load_coco`'s; the other formats are read into the same dict by their reader, cached
    likewise (the last two sources, keyed by the source and its annotation path's mtime and size).
    """
    if source.format == "coco":
        return load_coco(source.annotations)
    try:
        stat = source.annotations.stat()
    except FileNotFoundError:
        raise DataError(f"{source.annotations}: annotations not found") from None
    return _load_native(replace(source, part="all"), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _load_native(source: SplitSource, mtime_ns: int, size: int) -> COCO:  # noqa: ARG001 - the cache key
    from detr.data.formats import READERS

    reader = READERS.get(source.format)
    if reader is None:
        raise DataError(f"{source.annotations}: unknown annotation format {source.format!r}")
    return _indexed(dict(reader(source)), source.annotations)
