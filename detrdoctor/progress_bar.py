"""The one progress bar of every command that works for a while: a label, the bar, done/total, and the time
elapsed (or left). Transient, so the report that follows stands alone; on stderr where stdout may be --json."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(console: Console, *, remaining: bool = False, label: str = "{task.description}") -> Progress:
    """A Progress to use as a context manager; `remaining` shows the time left instead of the time spent,
    `label` replaces the task's description (rich markup, a template of the task's fields)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn() if remaining else TimeElapsedColumn(),
        console=console,
        transient=True,
    )
