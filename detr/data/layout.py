"""Where a dataset's annotation files and images are: the folder layouts of the common exports.

`find_layout` is the one place that decides, for training, evaluation, the checks and env-check:

- COCO: ROOT/annotations/instances_{train_split,val_split}.json beside ROOT/{train_split,val_split}/;
- Roboflow: ROOT/{train,valid,test}/_annotations.coco.json, each beside its images;
- annotation files named *train* / *val* (in annotations/ or ROOT) beside folders named after the splits
  (the official DETR fine-tuning tutorial: annotations/custom_train.json + train2017/);
- a single-file export: ROOT/annotations/<one>.json (CVAT: instances_default.json) or ROOT/result.json
  (Label Studio), with ROOT/images/; its validation split is a held-out share of its images;
- the native formats of `detr.data.formats` (YOLO, Pascal VOC, CVAT for images XML, VIA), each found by its
  own detector there.

Each is a detector of DETECTORS; when several layouts fit, the error lists each with the flags that select it.

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
VAL_WORDS = ("val", "valid", "validation")  # what a validation file or folder is named after
# COCO's files for other tasks sit beside instances_<split>.json and are named after the splits too.
OTHER_COCO_TASKS = ("captions_", "person_keypoints_", "stuff_", "panoptic_", "image_info_")
ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".7z", ".rar")
LABEL_STUDIO_FILE = "result.json"
LOOKED_FOR = (
    f"annotations/instances_<split>.json with <split>/ (COCO), annotations/*train*.json with a train folder, "
    f"train/{ROBOFLOW_FILE} (Roboflow), "
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
            "named-files": "annotation files named after the splits",
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

    DataError with one line naming what was looked for when nothing fits, or listing each candidate with the
    flags that select it when several do.
    """
    from detr.data.root import dataset_root

    flags = (data_cfg.train_annotations, data_cfg.val_annotations, data_cfg.train_images, data_cfg.val_images)
    if not data_cfg.coco_path and any(flags):
        root = Path.cwd()
    else:
        _refuse_archive(data_cfg)
        root = dataset_root(data_cfg, progress)
    layout = _detect(root, data_cfg, required=not data_cfg.train_annotations)
    if not any(flags):
        assert layout is not None  # required: _detect raised otherwise
        return replace(layout, kind=layout.kind if data_cfg.coco_path else "synthetic")
    return _apply_flags(layout, root, data_cfg)


def _refuse_archive(data_cfg: DataConfig) -> None:
    """DataError for a dataset still in its archive: "unzip it first"."""
    path = Path(data_cfg.coco_path).expanduser() if data_cfg.coco_path else None
    if path is not None and path.suffix.lower() in ARCHIVES and path.is_file():
        target = path.with_suffix("")
        raise DataError(
            f"{path}: an archive: unzip it first (unzip {path} -d {target}), then "
            f"{given_flags(data_cfg, data=str(target))}"
        )


# ---------------------------------------------------------------- detectors


# A detector sees the root and the settings and returns every layout it recognises there, fully resolved
# (paths that exist). Another format's detector is one more entry of DETECTORS.
Detector = Callable[[Path, DataConfig], list["Layout"]]


def _coco_layout(root: Path, data_cfg: DataConfig) -> list[Layout]:
    """annotations/instances_<split>.json beside <split>/, for the configured split names (train2017, val2017)
    and the plain ones (train, val)."""
    found = []
    for train_split, val_split in ((data_cfg.train_split, data_cfg.val_split), ("train", "val")):
        train_file, val_file = (root / "annotations" / f"instances_{s}.json" for s in (train_split, val_split))
        if train_file.is_file() and (root / train_split).is_dir():
            found.append(_pair(root, "coco", train_file, root / train_split, val_file, root / val_split, data_cfg))
    return found


def _named_files(root: Path, data_cfg: DataConfig) -> list[Layout]:
    """Annotation files named *train* (and *val*) in annotations/ or ROOT, beside image folders named after the
    split (the official DETR fine-tuning tutorial: annotations/custom_train.json + train2017/)."""
    files = [
        f
        for folder in (root / "annotations", root)
        if folder.is_dir()
        for f in sorted(folder.glob("*.json"))
        if not f.name.startswith(OTHER_COCO_TASKS)
    ]
    found = []
    for train_file in (f for f in files if "train" in f.stem.lower()):
        val_file = next(
            (
                f
                for f in files
                for word in VAL_WORDS
                if f.stem.lower() == train_file.stem.lower().replace("train", word)
            ),
            None,
        )
        train_dir = _split_folder(root, data_cfg.train_split, ("train",))
        val_dir = _split_folder(root, data_cfg.val_split, VAL_WORDS)
        if train_dir is not None:
            found.append(_pair(root, "named-files", train_file, train_dir, val_file, val_dir, data_cfg))
    return found


def _split_folder(root: Path, configured: str, words: Sequence[str]) -> Path | None:
    """ROOT/<configured split>, else the one folder of ROOT whose name holds one of `words` (None: none or several)."""
    if (root / configured).is_dir():
        return root / configured
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and any(w in d.name.lower() for w in words)]
    folders = [d for d in folders if d.name != "annotations"]
    return folders[0] if len(folders) == 1 else None


def _roboflow(root: Path, data_cfg: DataConfig) -> list[Layout]:
    if not (root / "train" / ROBOFLOW_FILE).is_file():
        return []
    train = SplitSource(root / "train", root / "train" / ROBOFLOW_FILE)
    val_dir = next((root / v for v in ROBOFLOW_VAL if (root / v / ROBOFLOW_FILE).is_file()), None)
    if val_dir is None:
        train, val = _held_out(train)
    else:
        val = SplitSource(val_dir, val_dir / ROBOFLOW_FILE)
    note = "test/ not used" if (root / "test" / ROBOFLOW_FILE).is_file() else ""
    return [Layout("roboflow", root, train, val, data_cfg.val_fraction, note)]


def _single_file(root: Path, data_cfg: DataConfig) -> list[Layout]:
    """The only annotation file of ROOT/annotations/ (CVAT: instances_default.json) or ROOT/result.json (Label
    Studio), its validation split a held-out share of its images; not where a part of the COCO layout is."""
    if _lenient_coco(root, data_cfg) is not None:
        return []
    candidates = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    if (root / LABEL_STUDIO_FILE).is_file():
        candidates.append(root / LABEL_STUDIO_FILE)
    if len(candidates) != 1:
        return []
    ann = candidates[0]
    kind = (
        "label-studio"
        if ann.name == LABEL_STUDIO_FILE
        else "cvat"
        if ann.name == "instances_default.json"
        else "single-file"
    )
    train, val = _held_out(SplitSource(_image_folder(root, ann), ann))
    return [Layout(kind, root, train, val, data_cfg.val_fraction)]


def _native_formats(root: Path, data_cfg: DataConfig) -> list[Layout]:
    """The layouts of the native formats (`detr.data.formats.DETECTORS`: YOLO, Pascal VOC, CVAT for images
    XML, VIA), whose sources name their reader in `format`."""
    from detr.data.formats import DETECTORS as NATIVE_DETECTORS  # they build Layouts: imported here

    return [layout for detect in NATIVE_DETECTORS if (layout := detect(root, data_cfg)) is not None]


DETECTORS: tuple[Detector, ...] = (_coco_layout, _named_files, _roboflow, _native_formats, _single_file)


def _pair(
    root: Path,
    kind: str,
    train_file: Path,
    train_dir: Path,
    val_file: Path | None,
    val_dir: Path | None,
    data_cfg: DataConfig,
) -> Layout:
    """Train and val from their files and folders; without a val file (or folder) a share of train is held out."""
    train = SplitSource(train_dir, train_file)
    if val_file is not None and val_file.is_file() and val_dir is not None and val_dir.is_dir():
        return Layout(kind, root, train, SplitSource(val_dir, val_file), data_cfg.val_fraction)
    train, val = _held_out(train)
    return Layout(kind, root, train, val, data_cfg.val_fraction)


def _detect(root: Path, data_cfg: DataConfig, required: bool) -> Layout | None:
    """The one layout the detectors find at `root`; several → DataError listing each with its flags (None
    when not `required`: the flags decide); none → the COCO layout of the configured split names if any of
    its parts is there (the dataset's own load then names what is missing), else DataError with a hint."""
    found: list[Layout] = []
    for detector in DETECTORS:
        try:
            layouts = detector(root, data_cfg)
        except DataError:
            if required:
                raise
            continue  # the flags name the annotations: a broken dataset beside them is not used
        for layout in layouts:
            if not any(_same_files(layout, other) for other in found):
                found.append(layout)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        if not required:
            return None
        choices = "; or ".join(f"{layout.describe()}: {selecting_flags(layout, data_cfg)}" for layout in found)
        raise DataError(f"{root}: {len(found)} layouts fit; pick one by its flags: {choices}")
    lenient = _lenient_coco(root, data_cfg)
    if lenient is not None or not required:
        return lenient
    candidates = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    if len(candidates) > 1:
        names = "; or ".join(f"{given_flags(data_cfg, train_annotations=_relative(c, root))}" for c in candidates[:4])
        raise DataError(
            f"{root}: several annotation files, none named after a split with an image folder beside it: {names} "
            "(and --val-annotations FILE, else a share of the training images is held out)"
        )
    raise DataError(f"{root}: {_no_layout_hint(root, data_cfg)}")


def _same_files(a: Layout, b: Layout) -> bool:
    """Whether two layouts read the same annotation files the same way: the first detector's reading wins (a
    native format's file is not also the single-file export of the detectors after it)."""
    return [(s.annotations, s.part, s.subset) for s in (a.train, a.val)] == [
        (s.annotations, s.part, s.subset) for s in (b.train, b.val)
    ]


def _lenient_coco(root: Path, data_cfg: DataConfig) -> Layout | None:
    train_dir, val_dir = root / data_cfg.train_split, root / data_cfg.val_split
    coco_files = [root / "annotations" / f"instances_{s}.json" for s in (data_cfg.train_split, data_cfg.val_split)]
    if not (any(f.is_file() for f in coco_files) or train_dir.is_dir() or val_dir.is_dir()):
        return None
    train, val = SplitSource(train_dir, coco_files[0]), SplitSource(val_dir, coco_files[1])
    if not (coco_files[1].is_file() or val_dir.is_dir()):
        train, val = _held_out(train)
    return Layout("coco", root, train, val, data_cfg.val_fraction)


def _no_layout_hint(root: Path, data_cfg: DataConfig) -> str:
    """Why nothing fits, for the cases people meet: a split folder of an export, an archive, no JSON at all."""
    if (root / ROBOFLOW_FILE).is_file():
        return (
            f"{ROBOFLOW_FILE} here: this is one split of a Roboflow export: point at its parent "
            f"({given_flags(data_cfg, data=str(root.parent))})"
        )
    native = next((f for f in sorted(root.glob("*.json")) if _label_studio_tasks(f)), None)
    if native is not None:
        return (
            f"{native.name} is a Label Studio JSON export (a list of tasks), not COCO: export as COCO "
            f"(Label Studio: Export → COCO), then {given_flags(data_cfg)} on that export"
        )
    archives = [p for p in sorted(root.iterdir()) if p.suffix.lower() in ARCHIVES and p.is_file()]
    if archives:
        return (
            f"no dataset layout found, but {archives[0].name} is here: unzip it first "
            f"(unzip {archives[0]} -d {root}), then {given_flags(data_cfg)}"
        )
    return (
        f"no dataset layout found; looked for {LOOKED_FOR} (or pass "
        f"{given_flags(data_cfg, train_annotations='FILE', train_images='DIR')})"
    )


def _label_studio_tasks(path: Path) -> bool:
    """Label Studio's own JSON export: a list of tasks with "data" (read from its first 64 KB only)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
    except OSError:
        return False
    return head.lstrip().startswith("[") and '"data"' in head and ('"annotations"' in head or '"predictions"' in head)


def selecting_flags(layout: Layout, data_cfg: DataConfig) -> str:
    """The command-line flags that select `layout` whatever else is in its root."""
    keys: dict[str, str] = {
        "train_annotations": _relative(layout.train.annotations, layout.root),
        "train_images": _relative(layout.train.images, layout.root),
    }
    if layout.val.part == "all":
        keys["val_annotations"] = _relative(layout.val.annotations, layout.root)
        keys["val_images"] = _relative(layout.val.images, layout.root)
    return given_flags(data_cfg, **keys)


FLAG_KEYS = ("train_annotations", "val_annotations", "train_images", "val_images")


def given_flags(data_cfg: DataConfig, **replaced: str) -> str:
    """--data and the dataset flags the user gave, with `replaced` ones set: what a hint tells them to run with."""
    import shlex

    values = {"data": data_cfg.coco_path, **{k: getattr(data_cfg, k) for k in FLAG_KEYS}, **replaced}
    return " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in values.items() if v)


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
        ann = root / d.train_annotations
        train = _flag_source(root, d.train_split, ("train",), ann, train, "train")
    assert train is not None  # without --train-annotations, _detect was required to find a layout
    if d.val_annotations:
        ann = root / d.val_annotations
        val = _flag_source(root, d.val_split, VAL_WORDS, ann, val, "val")
        train = replace(train, part="all")
    elif val is None or (val.part == "held_out" and val.annotations != train.annotations):
        train, val = _held_out(replace(train, part="all"))  # the held-out share of the given file
    if d.train_images:
        train = replace(train, images=root / d.train_images)
    if d.val_images:
        val = replace(val, images=root / d.val_images)
    kind = layout.kind if layout and not (d.train_annotations or d.val_annotations) else "flags"
    return Layout(kind, root, train, val, d.val_fraction, layout.note if layout else "")


def _flag_source(
    root: Path, split: str, words: Sequence[str], annotations: Path, found: SplitSource | None, name: str
) -> SplitSource:
    """The source of an annotation file named by a flag: a native format's (detr.data.formats), else COCO's
    with its image folder found by `_default_images`."""
    from detr.data.formats import source_for_file

    native = source_for_file(annotations, name)
    return native or SplitSource(_default_images(root, split, words, annotations, found), annotations)


def _default_images(root: Path, split: str, words: Sequence[str], annotations: Path, found: SplitSource | None) -> Path:
    """The image folder of an annotation file given by flag: the one the layout found for that file, else the
    first of ROOT/<split>, the folder named after the split, ROOT/images, the file's own folder and ROOT that
    holds the file's first image, else the split's folder (or the file's own when there is none)."""
    if found is not None and found.annotations == annotations:
        return found.images
    split_dir = root / split if (root / split).is_dir() else _split_folder(root, split, words)
    candidates = [c for c in (split_dir, root / "images", annotations.parent, root) if c is not None and c.is_dir()]
    first = _first_file_name(annotations)
    holding = next((c for c in candidates if first and (c / first).is_file()), None)
    return holding or split_dir or annotations.parent


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
