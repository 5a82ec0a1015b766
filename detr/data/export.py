"""Write any dataset `find_layout` recognises as a COCO export: the layout it reads first, and other tools read.

OUT gets annotations/instances_{train2017,val2017}.json and the images in train2017/ and val2017/ (their
paths under the split's deepest common folder kept, so no two names collide). Images are hard links by
default: no space used, plain files to every tool, and they outlive a move or deletion of ROOT; where a hard
link is impossible (another filesystem, a filesystem without them) a symbolic link is made instead, and
`copy` copies. Nothing is written into ROOT; a failed export removes what it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from detr.config import DataConfig
from detr.data.annotations import load_coco
from detr.data.layout import Layout, find_layout, split_image_ids
from detr.errors import DataError

SPLITS = (("train", "train2017"), ("val", "val2017"))
SHOWN = 3


class SplitExport(TypedDict):
    images: int
    annotations: int
    annotation_file: str
    image_folder: str


class ExportSummary(TypedDict):
    root: str
    out: str
    format: str
    layout: str
    categories: list[dict[str, Any]]
    splits: dict[str, SplitExport]
    images: dict[str, int]  # how the image files were placed: hard_links, symbolic_links, copies


def _plan_split(layout: Layout, split: str) -> tuple[dict[str, Any], list[tuple[Path, str]]]:
    """The split's COCO dict with the exported file names, and (source file, exported name) per image."""
    source = layout.split(split)
    coco = load_coco(source)
    ids = split_image_ids(coco.imgs, source.part, layout.val_fraction)
    if not ids:
        raise DataError(f"{source.annotations}: the {split} split holds no images: nothing to export")
    sources = [Path(os.path.abspath(source.images / str(coco.imgs[i]["file_name"]))) for i in ids]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise DataError(
            f"{source.images}: {len(missing)} of {len(sources)} {split} images are missing "
            f"(first: {', '.join(missing[:SHOWN])}): restore them, or remove them from the annotations"
        )
    common = Path(os.path.commonpath([p.parent for p in sources]))
    names = [p.relative_to(common).as_posix() for p in sources]
    chosen = set(ids)
    images = [{**coco.imgs[i], "file_name": name} for i, name in zip(ids, names)]
    annotations = [a for a in coco.dataset["annotations"] if a["image_id"] in chosen]
    data = {
        "info": {"description": f"{layout.describe()}; converted by detrdoctor convert"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco.dataset["categories"],
    }
    return data, list(zip(sources, names))


def _place(source: Path, target: Path, copy: bool) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(source, target)
        return "copies"
    try:
        os.link(source, target)
        return "hard_links"
    except OSError:
        os.symlink(source.resolve(), target)
        return "symbolic_links"


def check_out(root: Path, out: Path) -> None:
    """OUT must not exist or be an empty folder, and must lie outside ROOT (ROOT is never written)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: the output folder exists and is not empty: choose a new folder")
    root_abs, out_abs = Path(os.path.abspath(root)), Path(os.path.abspath(out))
    if out_abs == root_abs or root_abs in out_abs.parents:
        raise DataError(f"{out}: the output folder is inside the dataset {root}: choose a folder outside it")


def export_coco(
    data_cfg: DataConfig, out: Path, copy: bool = False, progress: Callable[[int, int], None] | None = None
) -> ExportSummary:
    """Write the dataset of `data_cfg.coco_path` to `out` as a COCO export (see the module docstring)."""
    if not data_cfg.coco_path:
        raise DataError("convert needs a dataset folder (ROOT)")
    root = Path(data_cfg.coco_path)
    check_out(root, out)
    layout = find_layout(data_cfg)
    plans = {split: _plan_split(layout, split) for split, _ in SPLITS}
    total = sum(len(set(files)) for _, files in plans.values())
    created = not out.exists()
    placed = {"hard_links": 0, "symbolic_links": 0, "copies": 0}
    splits: dict[str, SplitExport] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        done = 0
        for split, folder in SPLITS:
            data, files = plans[split]
            for source, name in dict.fromkeys(files):  # an image listed twice is placed once
                placed[_place(source, out / folder / name, copy)] += 1
                done += 1
                if progress:
                    progress(done, total)
        for split, folder in SPLITS:  # the annotation files last: a half-written export is never complete
            data, _ = plans[split]
            ann = out / "annotations" / f"instances_{folder}.json"
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.write_text(json.dumps(data))
            splits[split] = SplitExport(
                images=len(data["images"]),
                annotations=len(data["annotations"]),
                annotation_file=str(ann),
                image_folder=str(out / folder),
            )
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in list(out.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink()
        raise
    return ExportSummary(
        root=str(root),
        out=str(out),
        format=layout.kind,
        layout=layout.describe(),
        categories=list(plans["train"][0]["categories"]),
        splits=splits,
        images=placed,
    )
