"""The verdict core: one status vocabulary, the exit code, and the table every judging command prints."""

from __future__ import annotations

import pytest
from rich.console import Console

from detrdoctor.verdict import Check, as_finding, fail_or_pass, render_table, summarize


def test_a_check_keeps_the_contract_keys_first_and_refuses_other_statuses() -> None:
    row = Check("data.crowd", "warn", "3 crowd boxes", "none", count=3, example="a.jpg")
    assert list(row) == ["id", "status", "found", "expected", "fix", "message", "count", "example"]
    with pytest.raises(ValueError, match="limits"):
        Check("labels", "limits")


def test_a_pass_row_drops_the_fix_and_reason_that_would_not_be_true() -> None:
    failing = fail_or_pass("overfit.boxes", True, "stuck", "falls", "look", "why", section="overfit")
    passing = fail_or_pass("overfit.boxes", False, "falls", "falls", "look", "why", section="overfit")
    assert (failing["status"], failing["fix"], failing["section"]) == ("fail", "look", "overfit")
    assert (passing["status"], passing["fix"], passing["message"]) == ("pass", "", "")


def test_findings_map_onto_the_core_statuses() -> None:
    assert as_finding(Check("labels", "warn", message="m")) == {"check": "labels", "status": "limits", "message": "m"}
    assert as_finding(Check("labels", "pass"))["status"] == "ok"
    with pytest.raises(KeyError):
        as_finding(Check("labels", "fail"))  # evaluate's findings never fail a run


def test_the_table_shows_fixes_under_problems_and_the_verdict_line() -> None:
    checks = [
        Check("host.shm", "fail", "64 MiB", "≥ 1 GiB", "docker run --shm-size=2g", "workers share batches"),
        Check("host.cpus", "pass", "8", "≥ 4", "never shown", ""),
        Check("cuda.arch", "skip", message="no GPU"),
    ]
    summary = summarize(checks, strict=False)
    console = Console(width=100, record=True, color_system=None)
    render_table(checks, summary, "node", console)
    text = console.export_text()
    assert "fix: docker run --shm-size=2g" in text and "never shown" not in text and "no GPU" in text
    assert summary["exit_code"] == 1 and "fix the ✗ rows (exit 1)" in text.splitlines()[-1]
    triage = {**summary, "verdict": "this run will not learn"}
    render_table(checks, triage, "tiny", console, title="detrdoctor triage")
    assert "this run will not learn (exit 1)" in console.export_text()
