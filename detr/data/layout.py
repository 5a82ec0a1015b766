"""Where a dataset's annotation files and images are: the folder layouts of the common exports.

`find_layout` is the one place that decides, for training, evaluation, the checks and env-check:

- COCO: ROOT/annotations/instances_{train_split,val_split}.json beside ROOT/{train_split,val_split}/;
- Roboflow: ROOT/{train,valid,test}/_annotations.coco.json, each beside its images;
- a single-file export: ROOT/annotations/<one>.json (CVAT: instances_default.json) or ROOT/result.json
  (Label Studio), with ROOT/images/; its validation split is a held-out share of its images;
- the native formats of `detr.data.formats` (YOLO, Pascal VOC, CVAT for images XML, VIA), each found by its
  own detector there.

The --train-annotations, --val-annotations, --train-images and --val-images flags (DataConfig fields)
override what was found; relative paths are under ROOT.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from detr.config import DataConfig
from detr.errors import DataError

ROBOFLOW_FILE = "_annotations.coco.json"
ROBOFLOW_VAL = ("valid", "val")
LABEL_STUDIO_FILE = "result.json"
LOOKED_FOR = (
    f"annotations/instances_<split>.json with <split>/ (COCO), train/{ROBOFLOW_FILE} (Roboflow), "
    f"annotations/<one file>.json or {LABEL_STUDIO_FILE} with images/ (CVAT, Label Studio), "
    "data.yaml or classes.txt with images/ and labels/ (YOLO), Annotations/ with JPEGImages/ or XML files beside "
    "the images (Pascal VOC), annotations.xml (CVAT for images XML), a VIA project or export JSON (VIA)"
)


@dataclass(frozen=True)
class SplitSource:
    """One split's annotation file and image folder; `part` picks images of a file shared by two splits."""

    images: Path
    annotations: Path
    part: str = "all"  # all | rest (the training part of a held-out split) | held_out
    format: str = "coco"  # coco | yolo | voc | cvat-xml | via: the reader of `annotations` (detr.data.formats)
    subset: str = ""  # the split inside a file that holds several (YOLO data.yaml's train:, CVAT's subset)
    siblings: tuple[Path, ...] = ()  # the other splits' files, for formats whose class list is the names used


@dataclass(frozen=True)
class Layout:
    kind: str  # coco | roboflow | cvat | label-studio | single-file | flags | synthetic | yolo | voc | cvat-xml | via
    root: Path
    train: SplitSource
    val: SplitSource
    val_fraction: float
    note: str = ""  # what was found and is not used

    def split(self, name: str) -> SplitSource:
        if name not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {name!r}")
        return self.train if name == "train" else self.val

    def describe(self) -> str:
        """One line for people: what was found, and how the validation images were chosen."""
        names = {
            "coco": "COCO layout",
            "roboflow": "Roboflow export",
            "cvat": "CVAT export (single file)",
            "label-studio": "Label Studio export (single file)",
            "single-file": "single-file export",
            "flags": "annotation files from the flags",
            "synthetic": "synthetic dataset",
            "yolo": "YOLO dataset",
            "voc": "Pascal VOC XML",
            "cvat-xml": "CVAT for images XML",
            "via": "VIA JSON",
        }
        train = _described(self.train, self.root)
        if self.val.part == "held_out":
            val = f"val = {self.val_fraction:.0%} of its images held out (evenly spread; [data] val_fraction)"
        else:
            val = f"val {_described(self.val, self.root)}"
        note = f" ({self.note})" if self.note else ""
        return f"{names.get(self.kind, self.kind)} at {self.root}: train {train}, {val}{note}"


def _described(source: SplitSource, root: Path) -> str:
    subset = f" [{source.subset}]" if source.subset else ""
    return _relative(source.annotations, root) + subset


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def find_layout(data_cfg: DataConfig, progress: Callable[[int, int], None] | None = None) -> Layout:
    """The layout of `data_cfg.coco_path` (the synthetic dataset when empty) with the flags applied.

    DataError with one line naming what was looked for when nothing, or more than one thing, fits.
    """
    from detr.data.root import dataset_root

    flags = (data_cfg.train_annotations, data_cfg.val_annotations, data_cfg.train_images, data_cfg.val_images)
    if not data_cfg.coco_path and any(flags):
        root = Path.cwd()
    else:
        root = dataset_root(data_cfg, progress)
    layout = _detect(root, data_cfg, required=not data_cfg.train_annotations)
    if not any(flags):
        assert layout is not None  # required: _detect raised when nothing fits
        return replace(layout, kind=layout.kind if data_cfg.coco_path else "synthetic")
    return _apply_flags(layout, root, data_cfg)


def _detect(root: Path, data_cfg: DataConfig, required: bool) -> Layout | None:
    train_dir, val_dir = root / data_cfg.train_split, root / data_cfg.val_split
    coco_files = [root / "annotations" / f"instances_{s}.json" for s in (data_cfg.train_split, data_cfg.val_split)]
    fraction = data_cfg.val_fraction
    if any(f.is_file() for f in coco_files) or train_dir.is_dir() or val_dir.is_dir():
        train = SplitSource(train_dir, coco_files[0])
        val = SplitSource(val_dir, coco_files[1])
        if not (coco_files[1].is_file() or val_dir.is_dir()):
            train, val = _held_out(train)
        return Layout("coco", root, train, val, fraction)
    if (root / "train" / ROBOFLOW_FILE).is_file():
        train = SplitSource(root / "train", root / "train" / ROBOFLOW_FILE)
        roboflow_val = next((root / v for v in ROBOFLOW_VAL if (root / v / ROBOFLOW_FILE).is_file()), None)
        if roboflow_val is None:
            train, val = _held_out(train)
        else:
            val = SplitSource(roboflow_val, roboflow_val / ROBOFLOW_FILE)
        note = "test/ not used" if (root / "test" / ROBOFLOW_FILE).is_file() else ""
        return Layout("roboflow", root, train, val, fraction, note)
    from detr.data.formats import DETECTORS  # they build Layouts: imported here, not at module level

    for detect in DETECTORS:
        try:
            native = detect(root, data_cfg)
        except DataError:
            if required:
                raise
            native = None  # the flags name the annotations: a broken native dataset beside them is not used
        if native is not None:
            return native
    candidates = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    if (root / LABEL_STUDIO_FILE).is_file():
        candidates.append(root / LABEL_STUDIO_FILE)
    if len(candidates) == 1:
        ann = candidates[0]
        kind = (
            "label-studio"
            if ann.name == LABEL_STUDIO_FILE
            else "cvat"
            if ann.name == "instances_default.json"
            else "single-file"
        )
        train, val = _held_out(SplitSource(_image_folder(root, ann), ann))
        return Layout(kind, root, train, val, fraction)
    if len(candidates) > 1:
        if not required:
            return None
        names = ", ".join(_relative(c, root) for c in candidates[:4])
        raise DataError(
            f"{root}: several annotation files ({names}): pass --train-annotations FILE "
            "(and --val-annotations FILE, else a share of the training images is held out)"
        )
    if required:
        raise DataError(
            f"{root}: no dataset layout found; looked for {LOOKED_FOR} (or pass --train-annotations and --train-images)"
        )
    return None


def _held_out(source: SplitSource) -> tuple[SplitSource, SplitSource]:
    return replace(source, part="rest"), replace(source, part="held_out")


def _image_folder(root: Path, annotations: Path) -> Path:
    """ROOT/images, unless the file names already start there (Label Studio writes "images/x.jpg")."""
    images = root / "images"
    if not images.is_dir():
        return annotations.parent
    first = _first_file_name(annotations)
    if first and not (images / first).is_file() and (root / first).is_file():
        return root
    return images


def _first_file_name(annotations: Path) -> str | None:
    from detr.data.annotations import load_coco  # cached: the dataset reads the same parse

    try:
        images = load_coco(annotations).dataset["images"]
    except DataError:
        return None  # the dataset's own load names what is wrong with the file
    return str(images[0]["file_name"]) if images else None


def _apply_flags(layout: Layout | None, root: Path, data_cfg: DataConfig) -> Layout:
    d = data_cfg
    train = layout.train if layout else None
    val = layout.val if layout else None
    if d.train_annotations:
        train = _flag_source(root / d.train_split, root / d.train_annotations, "train")
    assert train is not None  # without --train-annotations, _detect was required to find a layout
    if d.val_annotations:
        val = _flag_source(root / d.val_split, root / d.val_annotations, "val")
        train = replace(train, part="all")
    elif val is None or (val.part == "held_out" and val.annotations != train.annotations):
        train, val = _held_out(replace(train, part="all"))  # the held-out share of the given file
    if d.train_images:
        train = replace(train, images=root / d.train_images)
    if d.val_images:
        val = replace(val, images=root / d.val_images)
    kind = layout.kind if layout and not (d.train_annotations or d.val_annotations) else "flags"
    return Layout(kind, root, train, val, d.val_fraction, layout.note if layout else "")


def _flag_source(split_dir: Path, annotations: Path, split: str) -> SplitSource:
    """The source of an annotation file named by a flag: a native format's (detr.data.formats), else COCO."""
    from detr.data.formats import source_for_file

    return source_for_file(annotations, split) or SplitSource(_default_images(split_dir, annotations), annotations)


def _default_images(split_dir: Path, annotations: Path) -> Path:
    """ROOT/<split> when it exists (the COCO layout), else the annotation file's folder (images beside it)."""
    return split_dir if split_dir.is_dir() else annotations.parent


def split_image_ids(image_ids: Sequence[int], part: str, fraction: float) -> list[int]:
    """The sorted image ids of `part` of a file: all, the held-out share (spread evenly: deterministic and
    independent of file order), or the rest. At least one image is held out when there are two or more."""
    ids = sorted(image_ids)
    if part == "all":
        return ids
    count = round(len(ids) * fraction)
    if fraction > 0 and len(ids) >= 2:
        count = min(max(count, 1), len(ids) - 1)
    held = {ids[int((j + 0.5) * len(ids) / count)] for j in range(count)} if count else set()
    return [i for i in ids if (i in held) == (part == "held_out")]
