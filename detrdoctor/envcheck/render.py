"""env-check's `--json` contract; its table is the verdict core's (`detrdoctor.verdict.render_table`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detrdoctor.verdict import Row, Summary, report, write_json


def render_json(checks: Sequence[Row], summary: Summary, facts: dict[str, Any]) -> None:
    """{"checks": [...], "summary": {...}, "facts": {...}}: the facts let `env-check --from` judge them again."""
    write_json(report(checks, summary, facts=facts))
