"""The one validation of a COCO-format annotation dict, whichever file or reader it came from.

`validate_coco` checks the fields training, evaluation and the doctor read (ids integers and unique,
boxes four finite numbers, `iscrowd` 0 or 1, a non-empty `images` list) and returns every problem, grouped
by kind: each names the file, the JSON path, the value and the fix. `normalise_coco` then fills what COCOeval
needs and exports often leave out (`iscrowd` 0, `area` w×h) and turns `\\` in file names into `/`.
Readers of other formats return the same dict, so the same function judges them.
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from detr.errors import DataError

REQUIRED_KEYS = ("images", "annotations", "categories")


def _shortener() -> reprlib.Repr:
    """A repr bounded in depth and length (Python 3.10's Repr takes no constructor arguments)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother, short.maxlist, short.maxdict = 2, 40, 40, 4, 4
    return short


SHOWN = _shortener()  # safe on values nested thousands deep


@dataclass(frozen=True)
class Problem:
    """One kind of problem in an annotation file: its first occurrence and how many entries share it."""

    file: str
    path: str  # JSON path of the first occurrence, e.g. images[3].id
    value: str  # the value found there, shortened
    what: str  # what is wrong with it
    fix: str
    count: int = 1

    def line(self) -> str:
        more = f" (and {self.count - 1} more like it)" if self.count > 1 else ""
        return f"{self.file}: {self.path} = {self.value}: {self.what}{more}; fix: {self.fix}"


def show(value: object) -> str:
    return SHOWN.repr(value)


def read_json(path: Path, encoding: str = "utf-8") -> object:
    """The parsed JSON of `path`; DataError in one line for text that is not JSON or is nested too deep.
    `encoding="utf-8-sig"` also reads a file that starts with a byte-order mark (VIA's Windows exports)."""
    try:
        with open(path, encoding=encoding) as f:
            return json.load(f)
    except UnicodeDecodeError:
        raise DataError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise DataError(
            f"{path}: JSON nested too deep to read (thousands of levels; COCO needs at most 4): "
            "re-export the annotations"
        ) from None


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Problems:
    """Problems grouped by (path pattern, what): the first occurrence is kept, the rest counted."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.found: dict[tuple[str, str], Problem] = {}

    def add(self, pattern: str, index: int | None, field: str, value: object, what: str, fix: str) -> None:
        key = (f"{pattern}[].{field}" if field else pattern, what)
        first = self.found.get(key)
        if first is not None:
            self.found[key] = Problem(first.file, first.path, first.value, what, fix, first.count + 1)
            return
        where = pattern if index is None else f"{pattern}[{index}]"
        self.found[key] = Problem(self.file, f"{where}.{field}" if field else where, show(value), what, fix)


CATEGORY_FIX = "number the categories with integers 0, 1, 2, ... and use them as the annotations' category_id"
COCO_FIX = f"export the annotations as COCO JSON (an object with the lists {', '.join(REQUIRED_KEYS)})"
IMAGE_ID_FIX = "number the images with integers (1, 2, 3, ...) and use those numbers as the annotations' image_id"


def _check_ids(
    problems: _Problems, entries: list[Any], pattern: str, fix: str, extra: Callable[[int, dict[str, Any]], None]
) -> None:
    """Every entry an object with an integer `id` not used before; `extra` checks the other fields."""
    seen: dict[int, int] = {}
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            problems.add(pattern, k, "", entry, "not an object", f"make each entry of '{pattern}' a JSON object")
            continue
        value = entry.get("id")
        if not _is_int(value):
            what = "missing" if "id" not in entry else "not an integer"
            problems.add(pattern, k, "id", value, f"id {what}", fix)
        elif value in seen:
            problems.add(pattern, k, "id", value, f"id already used by {pattern}[{seen[value]}]", fix)
        else:
            seen[value] = k
        extra(k, entry)


def validate_coco(data: object, file: Path | str) -> list[Problem]:
    """Every problem of a COCO-format dict that would crash, or silently change, training or evaluation."""
    problems = _Problems(str(file))
    if isinstance(data, list) and data and isinstance(data[0], dict) and "data" in data[0]:
        problems.add(
            "(top level)",
            None,
            "",
            data,
            "a Label Studio JSON export (a list of tasks), not COCO",
            "export as COCO (Label Studio: Export → COCO) and use that export",
        )
        return list(problems.found.values())
    if not isinstance(data, dict):
        problems.add("(top level)", None, "", data, "not COCO: the top level is not an object", COCO_FIX)
        return list(problems.found.values())
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), list):
            problems.add(key, None, "", data.get(key), f"not COCO: no list '{key}'", COCO_FIX)
    if problems.found:
        return list(problems.found.values())
    images, annotations, categories = data["images"], data["annotations"], data["categories"]
    if not images:
        problems.add(
            "images", None, "", images, "no images", "export the split with its images (train would run 0 steps)"
        )
    if not categories:
        problems.add("categories", None, "", categories, "no categories", "export the category list with the labels")

    def image_fields(k: int, img: dict[str, Any]) -> None:
        name = img.get("file_name")
        if not isinstance(name, str) or not name:
            problems.add("images", k, "file_name", name, "not a file name", "give every image its file name")
        for side in ("width", "height"):
            v = img.get(side)
            if v is not None and not (_is_number(v) and v > 0):
                problems.add("images", k, side, v, "not a positive number", f"drop '{side}' or give the pixel size")

    def annotation_fields(k: int, ann: dict[str, Any]) -> None:
        for field, fix in (("image_id", IMAGE_ID_FIX), ("category_id", "use the integer ids of 'categories'")):
            v = ann.get(field)
            if not _is_int(v):
                problems.add("annotations", k, field, v, "missing" if field not in ann else "not an integer", fix)
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
            problems.add(
                "annotations", k, "bbox", box, "not 4 finite numbers", "write boxes as [x, y, width, height] in pixels"
            )
        crowd = ann.get("iscrowd", 0)
        if not (_is_int(crowd) and crowd in (0, 1)) and crowd is not False and crowd is not True:
            problems.add(
                "annotations", k, "iscrowd", crowd, "not 0 or 1", "set iscrowd to 0 (one object) or 1 (a crowd)"
            )
        area = ann.get("area")
        if area is not None and not _is_number(area):
            problems.add("annotations", k, "area", area, "not a number", "drop 'area' (it is then width × height)")

    def category_fields(k: int, cat: dict[str, Any]) -> None:
        v = cat.get("id")
        if _is_int(v) and v < 0:
            problems.add("categories", k, "id", v, "negative (the model's labels are the ids)", CATEGORY_FIX)

    _check_ids(problems, images, "images", IMAGE_ID_FIX, image_fields)
    _check_ids(problems, annotations, "annotations", "number the annotations 1, 2, 3, ...", annotation_fields)
    _check_ids(problems, categories, "categories", CATEGORY_FIX, category_fields)
    return list(problems.found.values())


def problems_error(problems: Iterable[Problem]) -> DataError:
    """The first problem's line, with how many other kinds of problems the file has."""
    listed = list(problems)
    more = f" ({len(listed) - 1} more kinds of problems: detrdoctor env-check lists them)" if len(listed) > 1 else ""
    return DataError(listed[0].line() + more)


def normalise_coco(data: dict[str, Any]) -> list[str]:
    """Fill in place what evaluation needs and exports leave out; notes of what was changed, for the layout line.

    Call on a dict `validate_coco` accepted. `\\` separators in file names become `/` (Windows exports).
    """
    windows = 0
    for img in data["images"]:
        name = img["file_name"]
        if "\\" in name:
            img["file_name"] = name.replace("\\", "/")
            windows += 1
    for ann in data["annotations"]:
        ann["iscrowd"] = int(ann.get("iscrowd", 0))
        if ann.get("area") is None:
            ann["area"] = max(ann["bbox"][2], 0) * max(ann["bbox"][3], 0)
    return [f"{windows} file names with \\ separators read as /"] if windows else []
