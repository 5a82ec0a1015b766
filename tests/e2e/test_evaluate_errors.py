"""`evaluate --confusion --pr --errors` (and --breakdown, which holds them) on a trained checkpoint: the --json
contract, the terminal views, the figure, and bad flags refused before any work."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from detr.engine.trainer import Trainer
from detrdoctor.cli import app

ERROR_TYPES = ["classification", "localisation", "both", "duplicate", "background", "missed"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    from detrdoctor.profiles import load_profile

    cfg = load_profile("tiny")
    cfg.train.max_steps = 2
    run = tmp_path_factory.mktemp("errors_run")
    Trainer(cfg, output_dir=run).fit()
    return str(run / "checkpoint.pth")


def test_breakdown_json_holds_the_confusion_per_class_and_errors_contracts(weights: str, tmp_path: Path):
    pytest.importorskip("matplotlib")
    figure = tmp_path / "figures" / "eval.png"
    result = CliRunner().invoke(app, ["evaluate", "--weights", weights, "--breakdown", "--json", "--out", str(figure)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)

    confusion = report["confusion"]
    categories = [row["id"] for row in report["per_class"]]
    assert confusion["categories"] == [*categories, "background"] and confusion["iou"] == 0.5
    matrix = np.array(confusion["matrix"])
    assert matrix.shape == (len(categories) + 1, len(categories) + 1) and (matrix >= 0).all()
    assert matrix[:-1].sum() == report["breakdown"]["objects"]  # every object once: found as some class, or missed

    for row in report["per_class"]:
        assert set(row) == {"id", "name", "AP", "AP50", "precision", "recall", "f1", "threshold"}
        assert row["threshold"] is None or 0 <= row["threshold"] <= 1
    assert len(report["pr_curves"]["recall"]) == 101

    assert list(report["errors"]) == ERROR_TYPES
    for cost in report["errors"].values():
        assert set(cost) == {"count", "dAP50"} and cost["count"] >= 0 and cost["dAP50"] >= -1e-12
    assert report["errors"]["missed"]["count"] <= report["breakdown"]["objects"]
    assert report["error_findings"] and report["figure"] == str(figure) and figure.stat().st_size > 0


def test_each_flag_alone_shows_its_view(weights: str):
    runner = CliRunner()
    confusion = runner.invoke(app, ["evaluate", "--weights", weights, "--confusion", "--threshold", "0.2"])
    assert confusion.exit_code == 0, confusion.output
    assert "Confusion at IoU ≥ 0.5, boxes scored ≥ 0.2" in confusion.output
    assert "Errors (TIDE)" not in confusion.output and "P over R" not in confusion.output

    errors = runner.invoke(app, ["evaluate", "--weights", weights, "--errors", "--json"])
    report = json.loads(errors.output)
    assert list(report["errors"]) == ERROR_TYPES and "confusion" not in report and "per_class" not in report


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--out", "figure.pdf"], "give a .png or .svg file name"),
        (["--threshold", "1.5"], "give a score between 0 and 1"),
    ],
)
def test_bad_flags_are_one_line_before_any_work(weights: str, tmp_path: Path, flags: list[str], message: str):
    result = CliRunner().invoke(app, ["evaluate", "--weights", weights, "--confusion", *flags])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_without_matplotlib_out_is_one_line_naming_the_extra(weights: str, tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = CliRunner().invoke(app, ["evaluate", "--weights", weights, "--out", str(tmp_path / "f.png")])
    assert result.exit_code == 2 and "pip install 'detrdoctor[plot]'" in result.output
    assert not (tmp_path / "f.png").exists()
