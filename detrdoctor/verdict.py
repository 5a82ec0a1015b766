"""The one verdict core: a check row, the summary and exit code over rows, the table and the JSON form.

env-check, the dataset doctor, triage and evaluate's findings all judge with it. A `Check` is a plain dict (so the
rows stay JSON as they are, and cross the env-check probes' process boundary unchanged) with the stable keys of
the `--json` contracts: id, status (pass | warn | fail | skip), found, expected, fix (a command or setting; empty
when nothing needs doing) and message (why, in a sentence), then the details a report adds (triage's `section`,
the dataset doctor's `count` and `example`, ...). rich is imported by the renderers only: the probes import the
dataset doctor, and they start without it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

STATUSES = ("pass", "warn", "fail", "skip")
SYMBOLS = {"pass": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "bold red"), "skip": ("–", "dim")}
INDENT = 2  # under the check name, past the status symbol

Row = Mapping[str, Any]  # a Check, or a copy of one (a probe's JSON, a row with a section added)
Summary = dict[str, Any]


class Check(dict[str, Any]):
    """One row of a verdict: every contract key always present (strings), then the report's details."""

    def __init__(
        self,
        id: str,
        status: str,
        found: str = "",
        expected: str = "",
        fix: str = "",
        message: str = "",
        **details: Any,
    ) -> None:
        if status not in STATUSES:
            raise ValueError(f"check {id}: status {status!r} is not one of {', '.join(STATUSES)}")
        super().__init__(id=id, status=status, found=found, expected=expected, fix=fix, message=message, **details)


def fail_or_pass(id: str, failing: bool, found: str, expected: str, fix: str, message: str, **details: Any) -> Check:
    """A fail row with its fix and reason, or a pass row without them (they would not be true)."""
    if failing:
        return Check(id, "fail", found, expected, fix, message, **details)
    return Check(id, "pass", found, expected, **details)


def summarize(checks: Sequence[Row], strict: bool) -> Summary:
    """Counts by status and the exit code: 1 on any fail (and, with --strict, on any warn)."""
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in STATUSES}
    failing = counts["fail"] + (counts["warn"] if strict else 0)
    return {**counts, "total": len(checks), "strict": strict, "ok": failing == 0, "exit_code": 1 if failing else 0}


def report(checks: Sequence[Row], summary: Summary, **sections: Any) -> dict[str, Any]:
    """The JSON form: {"checks": [...], "summary": {...}, then the report's own sections in the order given}."""
    return {"checks": list(checks), "summary": summary, **sections}


def write_json(document: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2) + "\n")


# ---------------------------------------------------------------- the table


def render_table(
    checks: Sequence[Row],
    summary: Summary,
    source: str,
    console: Console | None = None,
    title: str = "detrdoctor env-check",
) -> None:
    """One line per check; a problem's reason and fix go on full-width lines under its row, so commands stay copyable.

    A summary with a "verdict" (triage's) shows it instead of env-check's readiness words."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.text import Text

    console = console or Console(highlight=False)
    console.print(Text.assemble((title, "bold"), f" · {source}"), soft_wrap=True)
    id_width = max(len(c["id"]) for c in checks)
    found_width, expected_width = _columns(checks, console.width - id_width - 4)
    console.print(
        _row(
            Text(" "),
            Text("check", "bold"),
            Text("found", "bold"),
            Text("expected", "bold"),
            id_width,
            found_width,
            expected_width,
        )
    )
    for c in checks:
        symbol, style = SYMBOLS[c["status"]]
        name = Text(c["id"], style if c["status"] != "pass" else "")
        if c["status"] == "skip":  # nothing to compare: its reason spans both columns
            console.print(
                _row(
                    Text(symbol, style),
                    name,
                    Text(c["message"] or c["found"], "dim"),
                    None,
                    id_width,
                    found_width + 1 + expected_width,
                    0,
                )
            )
        else:
            console.print(
                _row(
                    Text(symbol, style),
                    name,
                    Text(c["found"]),
                    Text(c["expected"], "dim"),
                    id_width,
                    found_width,
                    expected_width,
                )
            )
        if c["status"] in ("warn", "fail"):
            if c["message"]:
                console.print(Padding(Text(c["message"], "italic"), (0, 0, 0, INDENT), expand=False))
            if c["fix"]:
                # Unwrapped: the terminal folds a long command visually, and copying it still gives one line.
                console.print(Text.assemble(" " * INDENT, ("fix: ", style), (c["fix"], "bold")), soft_wrap=True)
    console.print()
    console.print(_summary_line(summary))


def _columns(checks: Sequence[Row], room: int) -> tuple[int, int]:
    """Split the width between found and expected: each gets what it needs if it fits, else a proportional share."""
    need_found = max(len(c["found"]) for c in checks)  # a skip's reason may wrap instead
    need_expected = max(len(c["expected"]) for c in checks)
    if need_found + need_expected <= room:
        return need_found, need_expected
    expected = min(need_expected, max(12, room * 2 // 5))
    return max(10, room - expected), expected


def _row(
    symbol: Text, name: Text, found: Text, expected: Text | None, id_width: int, found_width: int, expected_width: int
) -> Table:
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    grid.add_column(width=1, no_wrap=True)
    grid.add_column(width=id_width, no_wrap=True)
    grid.add_column(width=found_width, overflow="fold")
    cells = [symbol, name, found]
    if expected is not None:
        grid.add_column(width=expected_width, overflow="fold")
        cells.append(expected)
    grid.add_row(*cells)
    return grid


def _summary_line(summary: Summary) -> Text:
    from rich.text import Text

    parts: list[tuple[str, str] | str] = []
    for status in STATUSES:
        symbol, style = SYMBOLS[status]
        parts += [(f"{symbol} {summary[status]} {status}", style if summary[status] else "dim"), "  "]
    if "verdict" in summary:
        style = "bold red" if summary["fail"] else "bold yellow" if summary["warn"] else "bold green"
        verdict = (summary["verdict"], style)
    elif summary["ok"] and summary["warn"]:
        verdict = ("ready; review the ! rows", "bold yellow")
    elif summary["ok"]:
        verdict = ("ready", "bold green")
    elif summary["fail"]:
        verdict = ("fix the ✗ rows", "bold red")
    else:
        verdict = ("warnings fail with --strict", "bold yellow")
    return Text.assemble(*parts, "→ ", verdict, f" (exit {summary['exit_code']})")


# ---------------------------------------------------------------- findings (evaluate's form of a check)


class Finding(TypedDict):
    """evaluate's `--json` form of a check: {"check", "status": "ok" | "limits", "message"}."""

    check: str
    status: str
    message: str


FINDING_STATUS = {"pass": "ok", "warn": "limits"}  # what holds AP down is a warning, never a failed run


def as_finding(check: Check) -> Finding:
    return {"check": check["id"], "status": FINDING_STATUS[check["status"]], "message": check["message"]}


def render_findings(console: Console, findings: Sequence[Finding]) -> None:
    """One line per finding: ✓ or ✗, the check and what it found."""
    from rich.text import Text

    for finding in findings:
        mark = ("✓ ", "green") if finding["status"] == "ok" else ("✗ ", "yellow")
        console.print(Text.assemble(mark, (f"{finding['check']}: ", "bold"), finding["message"]))
