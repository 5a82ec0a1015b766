"""`evaluate --out`: precision–recall curves per class beside the confusion matrix (Agg canvas: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from detr.engine.confusion import Confusion
from detr.engine.precision_recall import OperatingPoint, PrCurves
from detrdoctor.extras import require

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ANNOTATED_UP_TO = 20  # categories; beyond, the cells are too small to print counts in
LEGEND_UP_TO = 20


def draw_evaluation(
    out: Path,
    curves: PrCurves,
    points: Mapping[int, OperatingPoint],
    confusion: Confusion,
    names: Mapping[int, str],
    title: str,
) -> None:
    """Write `out` (.png or .svg): left the curves AP50 is the area under, best-F1 points marked; right the
    matrix, each row shaded by its share of the row and printed with its count."""
    require("matplotlib", "plot", "matplotlib", "evaluate --out")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = [names.get(c, str(c)) if isinstance(c, int) else c for c in confusion["categories"]]
    side = max(6.0, 0.35 * len(labels) + 3)
    fig = Figure(figsize=(6.5 + side, max(5.5, side - 0.5)), layout="constrained")
    FigureCanvasAgg(fig)
    pr_axes, matrix_axes = fig.subplots(1, 2, width_ratios=[6.5, side])
    _draw_curves(pr_axes, curves, points, names)
    _draw_matrix(matrix_axes, confusion, labels)
    fig.suptitle(title, fontsize="medium")
    fig.savefig(out, dpi=100)


def _draw_curves(ax: Axes, curves: PrCurves, points: Mapping[int, OperatingPoint], names: Mapping[int, str]) -> None:
    recall = np.array(curves["recall"])
    drawn = 0
    for k, (category_id, precision) in enumerate(zip(curves["categories"], curves["precision"])):
        if precision is None:
            continue
        colour = f"C{k % 10}"
        reached = int(np.flatnonzero(np.array(precision) > 0)[-1]) + 1 if any(precision) else 1  # COCOeval: 0 beyond
        label = f"{names.get(category_id, str(category_id))} (AP50 {np.mean(precision):.2f})"
        shown = label if drawn < LEGEND_UP_TO else None
        ax.plot(recall[:reached], precision[:reached], color=colour, linewidth=1.3, label=shown)
        point = points.get(category_id)
        if point is not None and point["recall"] is not None and point["precision"] is not None:
            ax.plot(point["recall"], point["precision"], "o", color=colour, markersize=5)
        drawn += 1
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    ax.set_title(f"precision–recall at IoU {curves['iou']} (dots: best-F1 thresholds)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, color="grey")


def _draw_matrix(ax: Axes, confusion: Confusion, labels: Sequence[str]) -> None:
    matrix = np.array(confusion["matrix"], dtype=np.float64)
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90)
    ax.set_yticks(ticks, labels)
    ax.set(xlabel="predicted", ylabel="ground truth")
    ax.set_title(f"confusion at IoU ≥ {confusion['iou']} (shade: share of the row)")
    if len(labels) <= ANNOTATED_UP_TO:
        for (r, c), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if share[r, c] > 0.5 else "black"
                ax.text(c, r, str(int(count)), ha="center", va="center", fontsize="small", color=colour)
