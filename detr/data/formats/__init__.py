"""Readers of the annotation formats that are not COCO, each into a COCO-format dict, and their layout detectors.

`READERS[format](source)` reads one split (`detr.data.layout.SplitSource` with that `format`);
`DETECTORS`, each `(root, data_cfg) -> Layout | None`, are tried in order by `detr.data.layout` (its
`_native_formats` detector, after the COCO and Roboflow layouts and before the single-file JSON export).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from detr.config import DataConfig
from detr.data.formats import cvat_xml, via, voc, yolo
from detr.data.formats.records import CocoDict
from detr.data.layout import Layout, SplitSource

READERS: dict[str, Callable[[SplitSource], CocoDict]] = {
    "yolo": yolo.read,
    "voc": voc.read,
    "cvat-xml": cvat_xml.read,
    "via": via.read,
}
DETECTORS: tuple[Callable[[Path, DataConfig], Layout | None], ...] = (
    yolo.detect,
    voc.detect,
    cvat_xml.detect,
    via.detect,
)


def source_for_file(path: Path, split: str) -> SplitSource | None:
    """The split source of an annotation file given by a flag (--train-annotations), when it is in one of these
    formats: a YOLO yaml (its `split` entry), a CVAT XML, a VIA JSON, a VOC folder or ImageSets list; else None."""
    if path.suffix in yolo.YAML_SUFFIXES and path.is_file():
        config = yolo.read_yaml(path)
        return SplitSource(config.base, path, format="yolo", subset=split if split in config.splits else "train")
    if path.suffix == ".xml" and path.is_file() and cvat_xml.is_cvat(path):
        images = path.parent / "images"
        return SplitSource(images if images.is_dir() else path.parent, path, format="cvat-xml")
    if path.suffix == ".json" and path.is_file() and via.is_via(path):
        return SplitSource(via.image_folder(path), path, format="via")
    listing = path.suffix == ".txt" and path.is_file() and path.parent.name == "Main" and len(path.parents) > 2
    if listing and (path.parents[2] / "Annotations").is_dir():  # the devkit's ImageSets/Main/<split>.txt
        return SplitSource(path.parents[2] / "JPEGImages", path, format="voc")
    if voc.has_xml(path):  # a folder of VOC XML files
        images = path.parent / "JPEGImages"
        return SplitSource(images if images.is_dir() else path, path, format="voc")
    return None


__all__ = ["DETECTORS", "READERS", "CocoDict", "source_for_file"]
