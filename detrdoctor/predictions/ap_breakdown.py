"""`detrdoctor evaluate --breakdown`: judge what holds AP down, then draw it (AP against IoU as bars)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from detrdoctor.verdict import Check, Finding, as_finding, render_findings

LABEL_GAP = 0.05  # AP50 with labels ignored above AP50 by this much: wrong labels cost AP
LOOSE_GAP = 0.1  # AP at IoU 0.1 above AP at IoU 0.5 by this much: objects are found, boxes are loose
SPARE_RATIO = 1.3  # confident boxes per object above this: spare queries fire confident duplicates
FOUND_RECALL = 0.9  # recall at IoU 0.1 below this: some objects get no box at all
BAR_WIDTH = 30


def judge_breakdown(breakdown: dict[str, Any]) -> list[Finding]:
    """One finding per check (`detrdoctor.verdict.Finding`): a warn check where it limits AP, else a pass."""
    ap_at, recall_at = breakdown["AP_at_iou"], breakdown["recall_at_iou"]
    loose, tight, strict = ap_at["0.1"] or 0.0, ap_at["0.5"] or 0.0, ap_at["0.7"] or 0.0
    ap50, agnostic = tight, breakdown["AP50_class_agnostic"] or 0.0
    boxes, objects = breakdown["confident_detections"], breakdown["objects"]
    found = recall_at["0.1"] or 0.0
    findings: list[Finding] = []

    def add(check: str, limits: bool, bad: str, good: str) -> None:
        findings.append(as_finding(Check(check, "warn" if limits else "pass", message=bad if limits else good)))

    add(
        "labels",
        agnostic - ap50 >= LABEL_GAP,
        f"wrong labels cost {agnostic - ap50:.2f} AP50 ({agnostic:.3f} with labels ignored, {ap50:.3f} with them)",
        f"right (AP50 {agnostic:.3f} with labels ignored, {ap50:.3f} with them)",
    )
    add(
        "localisation",
        loose - tight >= LOOSE_GAP,
        f"objects are found but boxes are loose (AP {loose:.2f} at IoU 0.1, {tight:.2f} at 0.5, {strict:.2f} at 0.7):"
        " train longer, or give the transformer finer features (larger images, [model] backbone_stage = 3 or 2)",
        f"tight (AP {loose:.2f} at IoU 0.1, {tight:.2f} at 0.5, {strict:.2f} at 0.7)",
    )
    add(
        "spare boxes",
        objects > 0 and boxes > SPARE_RATIO * objects,
        f"{boxes} boxes scored ≥ {breakdown['confident_score']} for {objects} objects: spare queries fire confident"
        " duplicates; with few queries per object, raise eos_coef (the no-object weight, 0.1 in the paper)",
        f"{boxes} boxes scored ≥ {breakdown['confident_score']} for {objects} objects",
    )
    add(
        "missed objects",
        found < FOUND_RECALL,
        f"recall is {found:.2f} even at IoU 0.1, so some objects get no box at all: check num_queries against the"
        " most objects in an image, and small objects against the feature stride",
        f"almost none (recall {found:.2f} at IoU 0.1)",
    )
    return findings


def render_breakdown(console: Console, breakdown: dict[str, Any]) -> None:
    """AP and recall against the IoU threshold as a bar table, then the findings."""
    table = Table(title="AP and recall by IoU threshold", title_justify="left")
    table.add_column("IoU ≥", justify="right")
    table.add_column("AP", justify="right")
    table.add_column("", no_wrap=True)
    table.add_column("recall", justify="right")
    for key, ap in breakdown["AP_at_iou"].items():
        recall = breakdown["recall_at_iou"][key]
        filled = round(max(0.0, min(1.0, ap or 0.0)) * BAR_WIDTH)
        table.add_row(
            key,
            "—" if ap is None else f"{ap:.3f}",
            Text.assemble(("█" * filled, "cyan"), ("·" * (BAR_WIDTH - filled), "bright_black")),
            "—" if recall is None else f"{recall:.3f}",
        )
    console.print(table)
    render_findings(console, breakdown["findings"])
