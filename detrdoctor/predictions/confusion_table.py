"""`detrdoctor evaluate --confusion`: the confusion matrix as a shaded terminal table, its largest mistakes named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rich.console import Console

    from detr.engine.confusion import Confusion

SHOWN_CATEGORIES = 12  # more and the table does not fit a terminal: the categories with most mistakes are shown
CALLED_OUT = 5
RIGHT_SHADES = ("grey15", "dark_green", "green4", "green3")  # by the row's share: <25%, <50%, <75%, more
WRONG_SHADES = ("grey15", "dark_red", "red3", "red1")


def largest_mistakes(confusion: Confusion, names: Mapping[int, str], top: int = CALLED_OUT) -> list[str]:
    """The `top` largest off-diagonal cells in words, largest first."""
    matrix = np.array(confusion["matrix"])
    labels = [names.get(c, str(c)) if isinstance(c, int) else c for c in confusion["categories"]]
    background = len(labels) - 1
    cells = [(int(matrix[r, c]), r, c) for r in range(len(labels)) for c in range(len(labels)) if r != c]
    said = []
    for count, r, c in sorted((cell for cell in cells if cell[0] > 0), key=lambda cell: -cell[0])[:top]:
        if c == background:
            said.append(
                f"{count} {labels[r]} found by no box over its threshold (of any class, IoU ≥ {confusion['iou']})"
            )
        elif r == background:
            said.append(f"{count} boxes labelled {labels[c]} on no object")
        else:
            said.append(f"{count} {labels[r]} labelled {labels[c]}")
    return said


def shown_categories(matrix: np.ndarray, limit: int = SHOWN_CATEGORIES) -> list[int]:
    """Indices of the categories to show (background always last): all, or those with the most mistakes."""
    background = len(matrix) - 1
    if background <= limit:
        return list(range(background + 1))
    wrong = matrix.sum(0) + matrix.sum(1) - 2 * np.diag(matrix)
    return sorted(np.argsort(-wrong[:background], kind="mergesort")[:limit].tolist()) + [background]


def render_confusion(console: Console, confusion: Confusion, names: Mapping[int, str], threshold: str) -> None:
    """Rows ground truth, columns prediction; a cell's shade is its share of the row (green on the diagonal)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    matrix = np.array(confusion["matrix"])
    labels = [names.get(c, str(c)) if isinstance(c, int) else c for c in confusion["categories"]]
    shown = shown_categories(matrix)
    hidden = len(labels) - len(shown)
    table = Table(
        title=f"Confusion at IoU ≥ {confusion['iou']}, boxes scored ≥ {threshold} (rows truth, columns predicted)",
        title_justify="left",
        box=box.SIMPLE,
        caption=f"{hidden} categories with fewer mistakes not shown (all in --json and --out)" if hidden else None,
    )
    table.add_column("", no_wrap=True)
    for c in shown:
        table.add_column(escape(labels[c]), justify="right")
    for r in shown:
        row_total = max(int(matrix[r].sum()), 1)
        cells = []
        for c in shown:
            count = int(matrix[r, c])
            shades = RIGHT_SHADES if r == c else WRONG_SHADES
            shade = shades[min(int(4 * count / row_total), 3)] if count else ""
            cells.append(Text(str(count), style=f"bold on {shade}" if shade else "dim"))
        table.add_row(escape(labels[r]), *cells)
    console.print(table)
    for line in largest_mistakes(confusion, names):
        console.print(Text.assemble(("  ✗ ", "yellow"), line))
