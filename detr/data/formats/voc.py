"""Pascal VOC XML: one `<annotation>` file per image, as the VOC devkit and labelImg write them.

Layouts: the devkit (`Annotations/`, `JPEGImages/`, splits from `ImageSets/Main/{train,val}.txt`; the XML files
define the images) and flat folders (labelImg: images with an XML beside each; `images/` with `annotations/`;
Roboflow's `train/` and `valid/`), where an image without an XML is an image without objects.

Boxes: VOC's `<bndbox>` counts pixels from 1 with both ends inside the box, so [xmin, ymin, xmax, ymax] becomes
COCO's [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]. `<difficult>1` objects become crowd objects
(`iscrowd` 1): left out of the training targets and ignored by the evaluation, as VOC's own evaluation ignores
them. Category ids are 1..N over the sorted names used in the whole annotation folder, and in the other splits'
folders (every split agrees).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from detr.config import DataConfig
from detr.data.files import IMAGE_SUFFIXES
from detr.data.formats.records import (
    CocoDict,
    ImageRecord,
    ObjectRecord,
    coco_dict,
    finite,
    locate,
    parse_xml_root,
)
from detr.data.layout import ROBOFLOW_VAL, Layout, SplitSource, _held_out
from detr.errors import DataError

SPLIT_FILES = (("train", "val"), ("trainval", None))  # ImageSets/Main: train + val, else trainval held out
HEAD_BYTES = 2048


@dataclass
class VocFile:
    filename: str
    width: int | None
    height: int | None
    objects: list[ObjectRecord] = field(default_factory=list)


def detect(root: Path, data_cfg: DataConfig) -> Layout | None:
    """The devkit layout at ROOT (or its one VOC20xx/ folder), else XML files beside images or in annotations/."""
    fraction = data_cfg.val_fraction
    devkits = [d for d in (root, *sorted(root.glob("VOC*"))) if has_xml(d / "Annotations")]
    if devkits and (devkits[0] / "JPEGImages").is_dir():
        devkit = devkits[0]
        unused = (
            f"; {', '.join(d.name for d in devkits[1:])} not used (point at it to train on it)" if devkits[1:] else ""
        )
        images, main = devkit / "JPEGImages", devkit / "ImageSets" / "Main"
        for train_name, val_name in SPLIT_FILES:
            if (main / f"{train_name}.txt").is_file():
                train = SplitSource(images, main / f"{train_name}.txt", format="voc")
                if val_name and (main / f"{val_name}.txt").is_file():
                    val = SplitSource(images, main / f"{val_name}.txt", format="voc")
                    return Layout("voc", root, train, val, fraction, "devkit layout" + unused)
                train, val = _held_out(train)
                return Layout("voc", root, train, val, fraction, "devkit layout" + unused)
        train, val = _held_out(SplitSource(images, devkit / "Annotations", format="voc"))
        return Layout("voc", root, train, val, fraction, "devkit layout without ImageSets/Main" + unused)
    train_dir = root / "train"
    val_dir = next((root / v for v in ROBOFLOW_VAL if has_xml(root / v)), None)
    if has_xml(train_dir) and val_dir is not None:  # Roboflow's VOC export: XML beside the images per split
        train = SplitSource(train_dir, train_dir, format="voc", siblings=(val_dir,))
        val = SplitSource(val_dir, val_dir, format="voc", siblings=(train_dir,))
        note = "test/ not used" if has_xml(root / "test") else ""
        return Layout("voc", root, train, val, fraction, note)
    for xml_dir, images in ((root / "annotations", root / "images"), (root / "Annotations", root / "images")):
        if images.is_dir() and has_xml(xml_dir):
            train, val = _held_out(SplitSource(images, xml_dir, format="voc"))
            return Layout("voc", root, train, val, fraction)
    if has_xml(root) and any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
        train, val = _held_out(SplitSource(root, root, format="voc"))
        return Layout("voc", root, train, val, fraction, "XML files beside the images")
    return None


def has_xml(folder: Path) -> bool:
    """A folder holding at least one VOC XML file (the first one sniffed for its `<annotation>` root)."""
    if not folder.is_dir():
        return False
    first = next((p for p in sorted(folder.glob("*.xml")) if p.is_file()), None)
    if first is None:
        return False
    with open(first, "rb") as f:
        head = f.read(HEAD_BYTES)
    return b"<annotation>" in head or b"<annotation " in head


def read(source: SplitSource) -> CocoDict:
    """The images of `source.annotations`: an ImageSets id list, or a folder of XML files."""
    listing = source.annotations
    xml_dir = listing.parent.parent.parent / "Annotations" if listing.suffix == ".txt" else listing
    if not xml_dir.is_dir():
        raise DataError(f"{xml_dir}: annotation folder not found")
    files = _read_folder(xml_dir, xml_dir.stat().st_mtime_ns)
    others = [_read_folder(d, d.stat().st_mtime_ns) for d in source.siblings if d.is_dir()]
    labels = sorted({obj.label for folder in (files, *others) for voc in folder.values() for obj in voc.objects})
    if listing.suffix == ".txt":
        stems = [line.split()[0] for line in listing.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        missing = [s for s in stems if s not in files]
        if missing:
            raise DataError(
                f"{listing}: {len(missing)} listed images have no XML in {xml_dir} (first: {missing[0]}.xml): "
                "remove them from the list or add their annotations"
            )
    else:
        stems = sorted(files)
    records = [_record(files[stem], stem, source.images) for stem in stems]
    if listing.suffix != ".txt" and not (xml_dir.name == "Annotations" and (xml_dir.parent / "JPEGImages").is_dir()):
        named = {r.file_name for r in records} | {Path(r.file_name).stem for r in records}
        for image in sorted(p for p in source.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if image.name not in named and image.stem not in named:
                records.append(ImageRecord(image.name))  # labelImg writes no XML for an image without objects
    return coco_dict(records, labels, source.images, str(listing))


def _record(voc: VocFile, stem: str, images: Path) -> ImageRecord:
    name = locate(images, voc.filename) if voc.filename else ""
    if not name or not (images / name).is_file():
        name = next((f"{stem}{s}" for s in IMAGE_SUFFIXES if (images / f"{stem}{s}").is_file()), name or stem)
    return ImageRecord(name, voc.width, voc.height, list(voc.objects))


@functools.lru_cache(maxsize=2)
def _read_folder(folder: Path, mtime_ns: int) -> dict[str, VocFile]:  # noqa: ARG001 - the cache key
    return {p.stem: read_file(p) for p in sorted(folder.glob("*.xml")) if p.is_file()}


def read_file(path: Path) -> VocFile:
    """One VOC XML file; DataError naming the file and element of what is malformed."""
    root = parse_xml_root(path)
    if root.tag != "annotation":
        raise DataError(f"{path}: not a Pascal VOC file (its root element is <{root.tag}>, not <annotation>)")
    size = root.find("size")
    width = _int(size.findtext("width") if size is not None else None)
    height = _int(size.findtext("height") if size is not None else None)
    voc = VocFile((root.findtext("filename") or "").strip(), width, height)
    for number, obj in enumerate(root.findall("object"), start=1):
        where = f"{path}: <object> {number}"
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"{where} has no <name>: name its class")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{where} ({name}) has no <bndbox>: give it xmin, ymin, xmax, ymax")
        try:
            xmin, ymin, xmax, ymax = finite(
                (float(box.findtext(k) or "") for k in ("xmin", "ymin", "xmax", "ymax")), where
            )
        except ValueError:
            raise DataError(f"{where} ({name}): <bndbox> needs numbers in xmin, ymin, xmax and ymax") from None
        difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")
        voc.objects.append(ObjectRecord(name, (xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1), crowd=difficult))
    return voc


def _int(text: str | None) -> int | None:
    """A size from <size>, None when absent or not a positive number (some tools write 0: read the header)."""
    try:
        value = int(float(text or ""))
    except ValueError:
        return None
    return value if value > 0 else None
