"""`detrdoctor triage`: why a DETR does not learn, judged in minutes (collect → judge → render, like env-check).

Each module judges one section: schedule (pure rules over the config and dataset facts), overfit (a few images
memorised by the real Trainer), look (what the model sees, drawn) and history (a run's metrics.jsonl).
"""

from __future__ import annotations

from detrdoctor.envcheck.rules import check


def triage_check(
    section: str, id: str, status: str, found: str = "", expected: str = "", fix: str = "", message: str = ""
) -> dict[str, str]:
    """An env-check row (see `detrdoctor.envcheck.rules.check`) with the section it belongs to."""
    return {**check(id, status, found, expected, fix, message), "section": section}
