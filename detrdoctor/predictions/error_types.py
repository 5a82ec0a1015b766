"""`detrdoctor evaluate --errors`: say which of TIDE's error types holds AP50 down, and what usually causes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from detrdoctor.verdict import Check, Finding, as_finding, render_findings

if TYPE_CHECKING:
    from rich.console import Console

    from detr.engine.tide import ErrorCost

MATTERS = 0.01  # an error type costing less AP50 than this is not worth a finding
BAR_WIDTH = 16

WHAT_IT_IS = {
    "classification": "right box, another class",
    "localisation": "its class, 0.1 ≤ IoU < 0.5",
    "both": "another class, IoU < 0.5",
    "duplicate": "object already found",
    "background": "IoU < 0.1 with every object",
    "missed": "object no box came near",
}

USUAL_CAUSE = {
    "classification": "boxes sit on objects but name another class: the confusion matrix names the pairs; more (or"
    " checked) labels of those classes, or longer training of the class head",
    "localisation": "objects are found but boxes are loose: DETR's boxes tighten late, so train longer; larger"
    " images or finer features ([model] backbone_stage = 3 or 2) help small objects",
    "both": "boxes near objects of another class, neither class nor box right: crowded scenes; it shrinks as"
    " localisation and classification improve",
    "duplicate": "several queries fire on one object: DETR removes duplicates only through its set loss, learnt in"
    " the later decoder layers; train longer with the auxiliary decoder losses on, or raise eos_coef",
    "background": "confident boxes on nothing: too few queries learn to say no-object; raise eos_coef (the"
    " no-object weight, 0.1 in the paper), and look for objects left unlabelled",
    "missed": "objects get no box at all: check num_queries against the most objects in an image, small objects"
    " against the feature stride, and the score head (boxes ranked below the rest)",
}


def judge_errors(errors: Mapping[str, ErrorCost]) -> list[Finding]:
    """One finding per error type costing at least MATTERS AP50, largest first (it dominates), else one "ok"."""
    costly = sorted((k for k in errors if errors[k]["dAP50"] >= MATTERS), key=lambda k: -errors[k]["dAP50"])
    if not costly:
        return [as_finding(Check("errors", "pass", message=f"no error type costs {MATTERS} AP50 or more"))]
    findings: list[Finding] = []
    for rank, kind in enumerate(costly):
        count, what = errors[kind]["count"], "objects" if kind == "missed" else "boxes"
        lead = "dominates — fixing it alone gains" if rank == 0 else "costs"
        message = f"{lead} {errors[kind]['dAP50']:.3f} AP50 ({count} {what}): {USUAL_CAUSE[kind]}"
        findings.append(as_finding(Check(kind, "warn", message=message)))
    return findings


def render_errors(console: Console, errors: Mapping[str, ErrorCost], findings: list[Finding]) -> None:
    """The six types as a bar table of dAP50 with their counts, then the findings."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Errors (TIDE): AP50 gained by fixing each type alone", title_justify="left", box=box.SIMPLE)
    for name in ("type", "count", "dAP50", "", "is"):
        table.add_column(name, justify="right" if name in ("count", "dAP50") else "left", no_wrap=True)
    for kind, cost in errors.items():
        filled = round(max(0.0, min(1.0, cost["dAP50"])) * BAR_WIDTH)
        table.add_row(
            kind,
            str(cost["count"]),
            f"{cost['dAP50']:.3f}",
            Text.assemble(("█" * filled, "magenta"), ("·" * (BAR_WIDTH - filled), "bright_black")),
            Text(WHAT_IT_IS[kind], style="dim"),
        )
    console.print(table)
    render_findings(console, findings)
