"""YOLO (ultralytics) datasets: a data.yaml, or a classes.txt, naming the classes; a label file per image.

Label lines are `class cx cy w h`, fractions of the image's width and height (detect), or `class x1 y1 x2 y2
x3 y3 ...` (segment; an oriented box's four corners read the same way): each becomes its pixel box. An
image without a label file has no objects. A label file sits where ultralytics looks: the image's path with
its last `images` folder replaced by `labels` and the suffix by `.txt` (beside the image when the path has no
`images` folder). data.yaml's split entries are folders (searched recursively) or .txt lists of images,
relative to its `path:` (itself relative to the yaml's folder), or a list of those.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detr.config import DataConfig
from detr.data.files import IMAGE_SUFFIXES
from detr.data.formats.records import (
    CocoDict,
    ImageRecord,
    ObjectRecord,
    coco_dict,
    displayed_size,
    finite,
    locate,
    polygon_box,
)
from detr.data.layout import ROBOFLOW_VAL, Layout, SplitSource, _held_out
from detr.errors import DataError

YAML_SUFFIXES = (".yaml", ".yml")
CLASS_FILES = ("classes.txt", "obj.names")  # labelImg and Label Studio write classes.txt; darknet obj.names
VAL_FOLDERS = ("val", *ROBOFLOW_VAL, "validation")
NORMALISED = (-1.0, 2.0)  # coordinates beyond these are pixels, not fractions; within, training clamps the box


@dataclass(frozen=True)
class YoloConfig:
    """What a data.yaml says: the class names (index → name), the dataset folder, the split entries."""

    path: Path
    names: dict[int, str]
    base: Path
    splits: dict[str, list[str]]
    keypoints: bool  # pose labels: `class cx cy w h` followed by keypoints


def detect(root: Path, data_cfg: DataConfig) -> Layout | None:
    """A data.yaml (or another YAML with names) at ROOT; else a class file with images/ + labels/ or images
    with .txt labels beside them."""
    fraction = data_cfg.val_fraction
    yamls = [p for p in sorted(root.iterdir()) if p.suffix in YAML_SUFFIXES and p.is_file() and _is_dataset(p)]
    if yamls:
        chosen = next((p for p in yamls if p.stem == "data"), None) or yamls[0]
        if len(yamls) > 1 and chosen.stem != "data":
            names = ", ".join(p.name for p in yamls[:4])
            raise DataError(f"{root}: several YOLO dataset files ({names}): keep one (or name it data.yaml)")
        config = read_yaml(chosen)
        train = SplitSource(config.base, chosen, format="yolo", subset="train")
        if config.splits.get("val"):
            val = SplitSource(config.base, chosen, format="yolo", subset="val")
        else:
            train, val = _held_out(train)
        note = "test: not used" if config.splits.get("test") else ""
        return Layout("yolo", root, train, val, fraction, note)
    classes = next((f for d in (root, root / "labels") for n in CLASS_FILES if (f := d / n).is_file()), None)
    images, labels = root / "images", root / "labels"
    if classes is None:
        if images.is_dir() and labels.is_dir() and next(labels.rglob("*.txt"), None) is not None:
            raise DataError(
                f"{root}: YOLO labels/ without a data.yaml or classes.txt naming the classes: write classes.txt "
                "(one class name per line, in class index order) or a data.yaml"
            )
        return None
    if images.is_dir() and labels.is_dir():
        val_dir = next((images / v for v in VAL_FOLDERS if (images / v).is_dir()), None)
        if (images / "train").is_dir() and val_dir is not None:
            train = SplitSource(images / "train", classes, format="yolo")
            return Layout("yolo", root, train, SplitSource(val_dir, classes, format="yolo"), fraction)
        train, val = _held_out(SplitSource(images, classes, format="yolo"))
        return Layout("yolo", root, train, val, fraction)
    if any(p.suffix.lower() in IMAGE_SUFFIXES and p.with_suffix(".txt").is_file() for p in root.iterdir()):
        train, val = _held_out(SplitSource(root, classes, format="yolo"))
        return Layout("yolo", root, train, val, fraction, "labels beside the images")
    return None


def _is_dataset(path: Path) -> bool:
    try:
        data = _parse_yaml(path, path.stat().st_mtime_ns)
    except DataError:
        return path.name == "data.yaml"  # then read_yaml names what is wrong with it
    return isinstance(data, dict) and ("names" in data or "nc" in data) and "train" in data


@functools.lru_cache(maxsize=4)
def _parse_yaml(path: Path, mtime_ns: int) -> Any:  # noqa: ARG001 - the cache key
    import yaml

    try:
        with open(path, encoding="utf-8-sig") as f:
            return yaml.safe_load(f)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text: save it as UTF-8") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise DataError(f"{path}{where}: not valid YAML ({problem}): fix the file") from None


def read_yaml(path: Path) -> YoloConfig:
    data = _parse_yaml(path, path.stat().st_mtime_ns)
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a YOLO dataset file: expected keys path, train, val and names")
    names = _names(data, path)
    base = _base(data.get("path"), path.parent)
    splits: dict[str, list[str]] = {}
    for key in ("train", "val", "test"):
        value = data.get(key)
        if value is None or value == "":
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise DataError(f"{path}: {key}: {value!r} is not a folder, a .txt list or a list of them")
        splits[key] = list(items)
    if not splits.get("train"):
        raise DataError(f"{path}: no `train:` entry: add the training images' folder (relative to `path:`)")
    return YoloConfig(path, names, base, splits, "kpt_shape" in data)


def _names(data: dict[str, Any], path: Path) -> dict[int, str]:
    names, nc = data.get("names"), data.get("nc")
    if names is None:
        if not isinstance(nc, int) or nc < 1:
            raise DataError(f"{path}: no `names:`: list the class names (names: [cat, dog] or names: {{0: cat}})")
        return {i: f"class_{i}" for i in range(nc)}  # what ultralytics names them
    if isinstance(names, list):
        table = dict(enumerate(names))
    elif isinstance(names, dict) and all(isinstance(k, int) or str(k).isdigit() for k in names):
        table = {int(k): v for k, v in names.items()}
    else:
        raise DataError(f"{path}: names: {str(names)[:60]} is neither a list nor a map of class index to name")
    if isinstance(nc, int) and nc != len(table):
        raise DataError(f"{path}: nc = {nc} but names lists {len(table)} classes: make them agree")
    result = {i: str(table[i]) for i in sorted(table)}
    seen: set[str] = set()
    for name in result.values():
        if name in seen:
            raise DataError(f"{path}: names lists {name!r} twice: give each class its own name")
        seen.add(name)
    return result


def _base(path_value: Any, yaml_dir: Path) -> Path:
    """The dataset folder: `path:` (relative to the yaml's folder), or that folder when `path:` is absent or
    does not exist here (written on another machine, e.g. /content/ on Colab)."""
    if isinstance(path_value, str) and path_value.strip():
        candidate = yaml_dir / path_value.replace("\\", "/")
        if candidate.is_dir():
            return candidate
    return yaml_dir


def read_class_file(path: Path) -> dict[int, str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text: save it as UTF-8") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DataError(f"{path}: no class names: write one name per line, in class index order")
    return dict(enumerate(names))


def read(source: SplitSource) -> CocoDict:
    """The split `source.subset` of a data.yaml, or every image under `source.images` for a class file."""
    if source.annotations.suffix in YAML_SUFFIXES:
        config = read_yaml(source.annotations)
        names, keypoints = config.names, config.keypoints
        entries = config.splits.get(source.subset)
        if not entries:
            raise DataError(f"{source.annotations}: no `{source.subset}:` entry")
        images = [p for entry in entries for p in _split_images(entry, config, source.subset)]
    else:
        names, keypoints = read_class_file(source.annotations), False
        if not source.images.is_dir():
            raise DataError(f"{source.images}: image folder not found")
        images = _folder_images(source.images)
    labels = list(names.values())
    records = []
    for image in dict.fromkeys(images):  # an image listed twice is read once
        record = ImageRecord(_file_name(image, source.images))
        size = displayed_size(image)
        if size:
            record.width, record.height = size
            label = label_path(image)
            if label.is_file():
                record.objects = read_labels(label, size, names, source.annotations, keypoints)
        records.append(record)
    return coco_dict(records, labels, source.images, str(source.annotations))


def _folder_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _split_images(entry: str, config: YoloConfig, key: str) -> list[Path]:
    """The images of one split entry: a folder, or a .txt list of image paths."""
    clean = entry.replace("\\", "/")
    candidates = [config.base / clean, config.path.parent / clean]
    if clean.startswith("../"):  # Roboflow writes ../train/images beside a data.yaml in the dataset folder
        candidates.append(config.base / clean[3:])
    found = next((c for c in candidates if c.exists()), None)
    if found is None:
        raise DataError(
            f"{config.path}: {key}: {entry} not found under {config.base}: fix `{key}:` (relative to `path:`)"
        )
    if found.is_dir():
        return _folder_images(found)
    return _listed_images(found, config.base)


def _listed_images(listing: Path, base: Path) -> list[Path]:
    """The images a .txt list names, one a line: relative to the list's folder or the dataset folder
    (whichever has the file), absolute, or a path from another machine found by its tail under the dataset."""
    images = []
    for line in listing.read_text(encoding="utf-8-sig").splitlines():
        name = line.strip()
        if not name:
            continue
        clean = name.replace("\\", "/")
        near = listing.parent / clean
        images.append(near if near.is_file() else base / locate(base, clean))
    return images


def _file_name(image: Path, folder: Path) -> str:
    try:
        return image.relative_to(folder).as_posix()
    except ValueError:
        return image.resolve().as_posix()  # outside the dataset folder: an absolute path


def label_path(image: Path) -> Path:
    """Where ultralytics looks for an image's labels (see the module docstring)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def read_labels(
    path: Path, size: tuple[int, int], names: dict[int, str], names_file: Path, keypoints: bool
) -> list[ObjectRecord]:
    """The objects of one label file, in pixels; DataError naming the file and line of a malformed one."""
    width, height = size
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: not UTF-8 text: a YOLO label file has one `class cx cy w h` line per object"
        ) from None
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}:{number}"
        try:
            cls = float(tokens[0])
            values = finite((float(t) for t in tokens[1:]), where)
        except ValueError:
            raise DataError(f"{where}: {line.strip()[:60]!r} is not numbers: expected `class cx cy w h`") from None
        if not cls.is_integer() or int(cls) not in names:
            raise DataError(
                f"{where}: class {tokens[0]} is not among the {len(names)} classes of {names_file.name} "
                f"({', '.join(map(str, list(names)[:3]))}{', ...' if len(names) > 3 else ''}): "
                "fix the label, or add the class to the names"
            )
        if keypoints and len(values) >= 4:
            values = values[:4]
        if len(values) != 4 and (len(values) < 6 or len(values) % 2):
            raise DataError(
                f"{where}: {len(values)} numbers after the class: a YOLO label is `class cx cy w h` (a box) "
                "or `class x1 y1 x2 y2 x3 y3 ...` (a polygon)"
            )
        outside = next((v for v in values if not NORMALISED[0] <= v <= NORMALISED[1]), None)
        if outside is not None:
            raise DataError(
                f"{where}: coordinate {outside:g} is not a fraction of the image size: YOLO labels are normalised "
                "to 0..1 (divide pixel values by the image's width and height)"
            )
        label = names[int(cls)]
        if len(values) == 4:
            cx, cy, w, h = values
            box = ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)
            objects.append(ObjectRecord(label, box))
        else:
            xs = [x * width for x in values[0::2]]
            ys = [y * height for y in values[1::2]]
            polygon = [v for xy in zip(xs, ys) for v in xy]
            objects.append(ObjectRecord(label, polygon_box(xs, ys), polygon))
    return objects
