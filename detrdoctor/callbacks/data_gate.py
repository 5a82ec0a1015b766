"""The dataset doctor before training: failed checks stop `train` in one line, warnings become events."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detr.engine.callbacks import Callback, TrainerView
from detr.errors import DataError

Row = dict[str, Any]


def stop_on_failures(rows: Sequence[Row], hint: str) -> None:
    """DataError with one line naming the first failed check and its fix; `hint` says where to see them all."""
    failed = [r for r in rows if r["status"] == "fail"]
    if not failed:
        return
    first = failed[0]
    more = f"; {len(failed) - 1} more failed checks" if len(failed) > 1 else ""
    example = f" (e.g. {first['example']})" if first["example"] and first["example"] not in first["found"] else ""
    raise DataError(
        f"dataset check {first['id']}: {first['found']}{example}: {first['message'] or 'fails'}; "
        f"fix: {first['fix'] or first['expected']}{more} (all: {hint})"
    )


class DataCheckEvents(Callback):
    """Records the doctor's warnings as `data_check` events when training starts (printed, and in metrics.jsonl)."""

    def __init__(self, rows: Sequence[Row]) -> None:
        self.rows = [r for r in rows if r["status"] == "warn"]

    def on_train_start(self, trainer: TrainerView) -> None:
        for r in self.rows:
            trainer.emit_event(
                "data_check",
                f"{r['id']}: {r['found']}" + (f"; fix: {r['fix']}" if r["fix"] else ""),
                severity="warning",
                check=r["id"],
                found=r["found"],
                expected=r["expected"],
                fix=r["fix"],
                detail=r["message"],
                count=r["count"],
                example=r["example"],
            )
