"""Render the verdict: a table for people (status, check, found, expected, and the fix under each problem) or JSON."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

SYMBOLS = {"pass": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "bold red"), "skip": ("–", "dim")}
INDENT = 2  # under the check name, past the status symbol


def render_json(checks: list[dict[str, str]], summary: dict[str, Any], facts: dict[str, Any]) -> None:
    """The `--json` contract: {"checks": [...], "summary": {...}, "facts": {...}} (facts re-judge with --from)."""
    sys.stdout.write(json.dumps({"checks": checks, "summary": summary, "facts": facts}, indent=2) + "\n")


def render_table(
    checks: list[dict[str, str]],
    summary: dict[str, Any],
    source: str,
    console: Console | None = None,
    title: str = "detrdoctor env-check",
) -> None:
    """One line per check; a problem's reason and fix go on full-width lines under its row, so commands stay copyable.

    A summary with a "verdict" (triage's) shows it instead of env-check's readiness words."""
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


def _columns(checks: list[dict[str, str]], room: int) -> tuple[int, int]:
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


def _summary_line(summary: dict[str, Any]) -> Text:
    parts: list[tuple[str, str] | str] = []
    for status in ("pass", "warn", "fail", "skip"):
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
