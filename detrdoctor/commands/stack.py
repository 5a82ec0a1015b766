"""`detrdoctor stack PID`: the stacks of a running trainer and its DataLoader workers, and where each waits."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Annotated

import typer


@dataclass(frozen=True, kw_only=True)
class StackOptions:
    """The flags of `stack`."""

    pid: Annotated[int, typer.Argument(help="Process id of a running training process.")]
    native: Annotated[bool, typer.Option(help="Include native frames (py-spy --native).")] = False


def run_stack(options: StackOptions) -> int:
    """Print the Python stacks of a running process and its DataLoader workers (py-spy)."""
    from rich.console import Console

    from detrdoctor import pyspy

    text = pyspy.dump(options.pid, subprocesses=True, native=options.native)
    sys.stdout.write(text)
    points = pyspy.wait_points(pyspy.parse_dump(text), options.pid)
    console = Console(highlight=False)
    console.rule("where they wait", style="bright_black")
    for p in points:
        who = "process" if p["pid"] == options.pid else "child"
        console.print(f"{who} {p['pid']} ({p['state']}): [bold]{p['frame']}[/]")
    return 0
