"""Golden report contracts: the shape of a report (keys in order, check ids, status words), never its numbers.

`assert_golden(name, shape)` compares with tests/unit/golden/NAME.json; DETRDOCTOR_UPDATE_GOLDEN=1 rewrites the
file instead (review the diff: a changed golden is a changed contract).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "unit" / "golden"


def row_keys(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The distinct key lists of the rows, in order of first appearance."""
    seen: list[list[str]] = []
    for row in rows:
        keys = list(row)
        if keys not in seen:
            seen.append(keys)
    return seen


def row_types(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Each key's JSON types over all rows (a key that may be null lists "null")."""
    names = {str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
    types: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row.items():
            types.setdefault(key, set()).add(names.get(type(value), type(value).__name__))
    return {key: sorted(kinds) for key, kinds in types.items()}


def assert_golden(name: str, shape: dict[str, Any]) -> None:
    path = GOLDEN / f"{name}.json"
    shape = json.loads(json.dumps(shape))  # tuples become lists, as in the file
    if os.environ.get("DETRDOCTOR_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(shape, indent=1, ensure_ascii=False) + "\n")
    assert path.is_file(), f"no golden {path}: run once with DETRDOCTOR_UPDATE_GOLDEN=1 and review it"
    assert shape == json.loads(path.read_text()), f"{name}: the report's contract changed (golden {path})"
