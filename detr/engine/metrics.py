"""`metrics.jsonl`: one JSON object per line, each with a "type" (step, eval, event)."""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any


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

    Thread-safe: the stall detector writes its event from its own thread while the loop is blocked.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._file = open(self.path, "a", encoding="utf-8") if self.path else None
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            return
        line = json.dumps(finite_or_none(record), allow_nan=False) + "\n"
        with self._lock:
            if self._file is None:
                return
            self._file.write(line)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
