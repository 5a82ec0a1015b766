"""The reports' JSON contracts pinned by goldens: env-check, the dataset doctor, triage's rules, evaluate's AP
breakdown and error findings. Built by the library functions the commands call (collect → judge), shapes only."""

from __future__ import annotations

import copy
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from golden import assert_golden, row_keys, row_types

from detr.config import RunConfig
from detrdoctor.datadoctor.doctor import diagnose_dataset
from detrdoctor.envcheck.render import render_json
from detrdoctor.envcheck.rules import judge
from detrdoctor.predictions.error_types import judge_errors
from detrdoctor.profiles import load_profile
from detrdoctor.triage.history import judge_history
from detrdoctor.triage.schedule import judge_schedule
from detrdoctor.verdict import summarize

FIXTURE = Path(__file__).parents[1] / "fixtures" / "envcheck" / "gpu_node_ok.json"
STATUSES = ["fail", "pass", "skip", "warn"]


def statuses(rows: list[dict[str, Any]]) -> set[str]:
    return {r["status"] for r in rows}


def with_dataset(facts: dict[str, Any], cfg: RunConfig) -> dict[str, Any]:
    """The node's facts plus a dataset probe that found the tiny profile's data and ran the doctor on it."""
    facts = copy.deepcopy(facts)
    facts["options"] = {**facts.get("options", {}), "coco_path": "data"}
    split = {"name": "train", "annotations": "a.json", "counts": {"images": 4, "annotations": 8}}
    steps = {
        "root": {"ok": True, "exists": True},
        "layout": {"ok": True, "description": "COCO folders", "splits": [split]},
        "split:train": {"ok": True, **split, "decode": {"tried": 2, "failed": []}},
        "doctor": {"ok": True, "checks": diagnose_dataset(cfg)},
    }
    facts.setdefault("probes", {})["dataset"] = {"steps": steps}
    return facts


def test_env_check_json(tiny_cfg: RunConfig) -> None:
    facts = json.loads(FIXTURE.read_text())["facts"]
    checks = judge(with_dataset(facts, tiny_cfg))
    summary = summarize(checks, strict=False)
    out = io.StringIO()
    with redirect_stdout(out):
        render_json(checks, summary, facts)
    report = json.loads(out.getvalue())
    assert statuses(checks) <= set(STATUSES)
    warned = [{**c, "status": "warn"} for c in checks]
    failed = [*checks[:-1], {**checks[-1], "status": "fail"}]
    assert_golden(
        "env_check",
        {
            "top_level": list(report),
            "summary": list(summary),
            "check_keys": row_keys(report["checks"]),
            "check_types": row_types(report["checks"]),
            "ids": [c["id"] for c in checks],
            "statuses": STATUSES,
            "exit_codes": {
                "healthy": summary["exit_code"],
                "warn": summarize(warned, strict=False)["exit_code"],
                "warn_strict": summarize(warned, strict=True)["exit_code"],
                "fail": summarize(failed, strict=False)["exit_code"],
            },
        },
    )


def test_dataset_doctor_rows(tiny_cfg: RunConfig) -> None:
    rows = diagnose_dataset(tiny_cfg)
    assert statuses(rows) <= set(STATUSES)
    assert_golden("dataset_doctor", {"keys": row_keys(rows), "types": row_types(rows), "ids": [r["id"] for r in rows]})


def test_triage_rules() -> None:
    cfg = load_profile("demo")
    facts = {"train_images": 1920, "objects_per_image": 2.5, "synthetic": True, "world_size": 1, "bf16": None}
    schedule = judge_schedule(cfg, facts)
    history = judge_history([], cfg.train.lr_drop, cfg.train.epochs, None)
    rows = schedule + history
    assert statuses(rows) <= set(STATUSES)
    assert_golden(
        "triage_rules",
        {"keys": row_keys(rows), "types": row_types(rows), "ids": [r["id"] for r in rows]},
    )


def breakdown_of(ap: float, agnostic: float, boxes: int) -> dict[str, Any]:
    thresholds = ("0.1", "0.3", "0.5", "0.7", "0.9")
    return {
        "AP_at_iou": dict.fromkeys(thresholds, ap),
        "recall_at_iou": dict.fromkeys(thresholds, ap),
        "AP50_class_agnostic": agnostic,
        "confident_detections": boxes,
        "confident_score": 0.5,
        "objects": 10,
    }


def test_ap_breakdown_and_error_findings() -> None:
    from detrdoctor.predictions.ap_breakdown import judge_breakdown

    good, bad = judge_breakdown(breakdown_of(1.0, 1.0, 10)), judge_breakdown(breakdown_of(0.0, 0.5, 30))
    cost = {"dAP50": 0.2, "count": 3}
    errors = {k: cost for k in ("classification", "localisation", "both", "duplicate", "background", "missed")}
    costly, none = judge_errors(errors), judge_errors({k: {"dAP50": 0.0, "count": 0} for k in errors})  # type: ignore[misc]
    assert_golden(
        "ap_breakdown",
        {
            "finding_keys": row_keys(good + bad),
            "checks": [f["check"] for f in good],
            "statuses": {"healthy": sorted(statuses(good)), "broken": sorted(statuses(bad))},
            "error_finding_keys": row_keys(costly + none),
            "error_checks": {"costly": [f["check"] for f in costly], "none": [f["check"] for f in none]},
            "error_statuses": {"costly": sorted(statuses(costly)), "none": sorted(statuses(none))},
        },
    )
