"""`detrdoctor triage`: why a DETR does not learn, judged in minutes (collect → judge → render, like env-check).

schedule.py  pure rules over the config and dataset facts
overfit.py   a few images memorised by the real Trainer, and the rules over that run
look.py      what the model sees: training samples and the overfit model's predictions, drawn
history.py   rules over a run's metrics.jsonl

Its rows are the verdict core's checks (`detrdoctor.verdict`) with the section they belong to.
"""

from __future__ import annotations

from detrdoctor.verdict import Check


def triage_check(
    section: str, id: str, status: str, found: str = "", expected: str = "", fix: str = "", message: str = ""
) -> Check:
    return Check(id, status, found, expected, fix, message, section=section)
