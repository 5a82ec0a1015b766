"""Loading a COCO annotation file: parsed, validated (`detr.data.validate`), normalised and indexed once."""

from __future__ import annotations

import contextlib
import functools
import io
from dataclasses import dataclass
from pathlib import Path

from pycocotools.coco import COCO

from detr.data.validate import normalise_coco, problems_error, read_json, validate_coco
from detr.errors import DataError


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


def load_annotations(path: Path) -> Annotations:
    """The validated annotation file; DataError in one line naming the file (and JSON path) when it is not usable.

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


def load_coco(path: Path) -> COCO:
    """The pycocotools index of a validated annotation file (see `load_annotations`)."""
    return load_annotations(path).coco


def dataset_categories(coco: COCO) -> list[dict]:
    """The categories of an annotation file as [{"id", "name"}] sorted by id: what checkpoints carry, so that
    a model's labels (the dataset's own category ids) keep their names. A category without a name gets its id."""
    return [{"id": int(i), "name": str(coco.cats[i].get("name", i))} for i in sorted(coco.cats)]
