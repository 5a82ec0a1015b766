"""Readers of the annotation formats that are not COCO, each into a COCO-format dict, and their layout detectors.

`READERS[format](source)` reads one split (`detr.data.layout.SplitSource` with that `format`);
`DETECTORS` are tried in order by `detr.data.layout` after the COCO layouts, each `(root, data_cfg) -> Layout | None`.
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

__all__ = ["DETECTORS", "READERS", "CocoDict"]
