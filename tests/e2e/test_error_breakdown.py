import json

import numpy as np
import pytest
from golden import assert_golden, row_keys
from typer.testing import CliRunner

from detr.data import build_dataset
from detr.engine.error_breakdown import error_breakdown
from detr.engine.trainer import Trainer
from detrdoctor.cli import app
from detrdoctor.predictions.ap_breakdown import judge_breakdown


@pytest.fixture
def coco(tiny_cfg):
    return build_dataset(tiny_cfg.data, "val", train=False).coco


def ground_truth_rows(coco, grow: float = 0.0, relabel: bool = False, score: float = 1.0) -> list[list[float]]:
    """Detections at the ground-truth boxes, optionally grown on every side and given another class."""
    categories = sorted(coco.cats)
    rows = []
    for a in coco.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        label = categories[(categories.index(a["category_id"]) + 1) % len(categories)] if relabel else a["category_id"]
        rows.append([a["image_id"], x - grow * w, y - grow * h, w * (1 + 2 * grow), h * (1 + 2 * grow), score, label])
    return rows


def breakdown_and_findings(coco, rows):
    detections = np.array(rows, dtype=np.float64)
    result = error_breakdown(coco, detections, list(coco.getImgIds()))
    return result, {f["check"]: f["status"] for f in judge_breakdown(result)}


def test_perfect_detections_pass_every_check(coco):
    result, status = breakdown_and_findings(coco, ground_truth_rows(coco))
    assert all(ap == pytest.approx(1.0) for ap in result["AP_at_iou"].values())
    assert result["AP50_class_agnostic"] == pytest.approx(1.0)
    assert result["confident_detections"] == result["objects"] == len(coco.dataset["annotations"])
    assert set(status.values()) == {"ok"}


def test_wrong_labels_are_told_apart_from_loose_boxes(coco):
    result, status = breakdown_and_findings(coco, ground_truth_rows(coco, relabel=True))
    assert result["AP_at_iou"]["0.5"] == pytest.approx(0.0) and result["AP50_class_agnostic"] == pytest.approx(1.0)
    assert status["labels"] == "limits" and status["localisation"] == "ok"

    # Grown by 30% of the size on every side: IoU 1/1.6² ≈ 0.39, found at 0.1 and 0.3, not at 0.5.
    result, status = breakdown_and_findings(coco, ground_truth_rows(coco, grow=0.3))
    assert result["AP_at_iou"]["0.3"] == pytest.approx(1.0) and result["AP_at_iou"]["0.5"] == pytest.approx(0.0)
    assert status["localisation"] == "limits" and status["labels"] == "ok"


def test_confident_duplicates_and_missed_objects(coco):
    rows = ground_truth_rows(coco) + ground_truth_rows(coco, grow=0.05, score=0.9)
    result, status = breakdown_and_findings(coco, rows)
    assert result["confident_detections"] == 2 * result["objects"]
    assert status["spare boxes"] == "limits" and status["missed objects"] == "ok"

    half = ground_truth_rows(coco)[::2]
    result, status = breakdown_and_findings(coco, half)
    assert result["recall_at_iou"]["0.1"] < 0.9 and status["missed objects"] == "limits"


def test_evaluate_breakdown_in_json_and_as_a_chart(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 2
    Trainer(tiny_cfg, output_dir=tmp_path).fit()
    weights = str(tmp_path / "checkpoint.pth")
    result = CliRunner().invoke(app, ["evaluate", "--weights", weights, "--breakdown", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    breakdown = report["breakdown"]
    assert list(breakdown["AP_at_iou"]) == ["0.1", "0.3", "0.5", "0.7", "0.9"]
    assert breakdown["AP_at_iou"]["0.5"] == pytest.approx(report["AP50"])
    assert {f["check"] for f in breakdown["findings"]} == {"labels", "localisation", "spare boxes", "missed objects"}
    golden = {"top_level": list(report), "breakdown": list(breakdown), "finding_keys": row_keys(breakdown["findings"])}
    assert_golden("evaluate_breakdown_cli", golden | {"checks": [f["check"] for f in breakdown["findings"]]})

    result = CliRunner().invoke(app, ["evaluate", "--weights", weights, "--breakdown"])
    assert result.exit_code == 0, result.output
    assert "AP and recall by IoU threshold" in result.output and "missed objects:" in result.output
