"""Loading a split's annotations, COCO JSON or a format `detr.data.formats` reads: parsed, validated
(`detr.data.validate`), normalised and indexed once, by one path."""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pycocotools.coco import COCO

from detr.data.validate import normalise_coco, problems_error, read_json, validate_coco
from detr.errors import DataError

if TYPE_CHECKING:
    from detr.data.layout import SplitSource


@dataclass(frozen=True)
class Annotations:
    """A validated annotation file: the pycocotools index of it, and what normalising it changed."""

    file: Path
    coco: COCO
    notes: tuple[str, ...]  # e.g. "136 file names with \\ separators read as /"


def index_coco(data: object, file: Path) -> Annotations:
    """Validate and normalise a COCO-format dict (from JSON or a reader of another format), then index it."""
    problems = validate_coco(data, file)
    if problems:
        raise problems_error(problems)
    assert isinstance(data, dict)  # validate_coco accepts nothing else
    notes = normalise_coco(data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()
    return Annotations(file, coco, tuple(notes))


@functools.lru_cache(maxsize=2)
def _load(path: Path, mtime_ns: int, size: int) -> Annotations:  # noqa: ARG001 - the cache key
    return index_coco(read_json(path), path)


@functools.lru_cache(maxsize=2)
def _load_native(source: SplitSource, mtime_ns: int, size: int) -> Annotations:  # noqa: ARG001 - the cache key
    from detr.data.formats import READERS

    reader = READERS.get(source.format)
    if reader is None:
        raise DataError(f"{source.annotations}: unknown annotation format {source.format!r}")
    return index_coco(dict(reader(source)), source.annotations)


def load_annotations(source: SplitSource | Path) -> Annotations:
    """The validated annotations of a split's source (or of a COCO file named by path), in any format
    `detr.data.formats` reads; DataError in one line naming the file (and JSON path) when it is not usable.

    A COCO file is parsed from JSON, another format read into the same dict by its reader; both go through
    `index_coco`, so validation and normalisation are the same. The last two of each stay cached (keyed by
    the file, or the source, and its annotation path's mtime and size), so checking a dataset and then
    building it reads the annotations once.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
    elif source.format == "coco":
        path = source.annotations
    else:
        try:
            stat = source.annotations.stat()
        except FileNotFoundError:
            raise DataError(f"{source.annotations}: annotations not found") from None
        return _load_native(replace(source, part="all"), stat.st_mtime_ns, stat.st_size)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    if not path.is_file():
        raise DataError(f"{path}: annotation path is not a file")
    return _load(path.resolve(), stat.st_mtime_ns, stat.st_size)


def load_coco(source: SplitSource | Path) -> COCO:
    """The pycocotools index of a split's validated annotations (see `load_annotations`)."""
    return load_annotations(source).coco


def dataset_categories(coco: COCO) -> list[dict]:
    """The categories of an annotation file as [{"id", "name"}] sorted by id: what checkpoints carry, so that
    a model's labels (the dataset's own category ids) keep their names. A category without a name gets its id."""
    return [{"id": int(i), "name": str(coco.cats[i].get("name", i))} for i in sorted(coco.cats)]
