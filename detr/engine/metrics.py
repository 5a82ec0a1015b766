"""`metrics.jsonl`: one JSON object per line, each with a "type" (step, eval, event)."""

from __future__ import annotations

import json
import math
import os
import threading
from pathlib import Path
from typing import Any

from detr.outputs import writing


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Infinity: write non-finite numbers as null so every line stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


class MetricsWriter:
    """Appends records to a JSONL file, flushed line by line so a crash loses at most one record.

    A torn last line (a kill or a full disk mid-write) is cut off on opening, so appended records start on a
    line of their own; `repaired_bytes` says how much was cut. `truncate` starts the file afresh.
    Thread-safe: the stall detector writes its event from its own thread while the loop is blocked.
    """

    def __init__(self, path: str | Path | None, truncate: bool = False):
        self.path = Path(path) if path else None
        self.repaired_bytes = 0
        self._file = None
        if self.path is not None:
            with writing(self.path):
                if not truncate:
                    self.repaired_bytes = cut_torn_line(self.path)
                self._file = open(self.path, "w" if truncate else "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(finite_or_none(record), allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                return
            with writing(self.path or "metrics.jsonl"):
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass  # its failed write was already reported
                self._file = None


def cut_torn_line(path: Path) -> int:
    """Cut an unterminated last line off `path`; returns the bytes removed (0: none, or no file)."""
    if not path.is_file():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep = 0
        position = size
        while position > 0:  # the last newline, read backwards in blocks
            start = max(0, position - 65536)
            f.seek(start)
            block = f.read(position - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        f.truncate(keep)
        return size - keep


def read_metrics_checked(path: str | Path) -> tuple[list[dict[str, Any]], str | None]:
    """All records of a metrics.jsonl file, and a note naming the lines that are not JSON, which are skipped:
    a killed run or a full disk leaves a torn last line (and an older version appended after one)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    records: list[dict[str, Any]] = []
    torn: list[int] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
    if not torn:
        return records, None
    shown = ", ".join(map(str, torn[:5]))
    which = "its torn last line" if torn == [len(lines)] else f"{len(torn)} torn lines (line {shown})"
    return records, f"{path}: skipped {which}, cut short by a killed run or a full disk"


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file (a torn last line skipped, see `read_metrics_checked`)."""
    return read_metrics_checked(path)[0]
