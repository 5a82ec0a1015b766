"""`detrdoctor plot`: a figure of runs overlaid by step, a terminal summary, JSON, and a missing matplotlib."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.cli import app
from detrdoctor.profiles import load_profile

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two tiny runs with different learning rates, the second evaluated at every epoch."""
    folders = []
    for name, lr, eval_every in (("base", 1e-4, 0), ("fast-lr", 3e-4, 1)):
        cfg = load_profile("tiny")
        cfg.train.max_steps, cfg.train.lr, cfg.train.eval_every = 4, lr, eval_every
        folder = tmp_path_factory.mktemp("runs") / name
        Trainer(cfg, output_dir=folder).fit()
        folders.append(str(folder))
    return folders


def test_figure_of_two_runs(runs, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    out = tmp_path / "runs.png"
    result = runner.invoke(app, ["plot", *runs, "--out", str(out), "--smooth", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and out.stat().st_size > 20_000
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1500, 1050)
        assert len(image.getcolors(1 << 16) or ()) > 50  # curves, not a blank canvas

    svg = tmp_path / "runs.svg"
    assert runner.invoke(app, ["plot", *runs, "--out", str(svg)]).exit_code == 0
    assert svg.read_text().lstrip().startswith("<?xml") and "fast-lr" in svg.read_text()


def test_terminal_summary_and_json(runs):
    result = runner.invoke(app, ["plot", *runs])
    assert result.exit_code == 0, result.output
    for text in (
        "base — 4 steps",
        "fast-lr — 4 steps, 1 evaluations",
        "total loss",
        "gradient norm",
        "data_summary step 0",
    ):
        assert text in result.output, text
    assert any(ch in result.output for ch in "▁▂▃▄▅▆▇█")

    result = runner.invoke(app, ["plot", *runs, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["name"] for r in report["runs"]] == ["base", "fast-lr"] and report["figure"] is None
    for folder, run in zip(runs, report["runs"]):
        records = read_metrics(f"{folder}/metrics.jsonl")
        steps = [r for r in records if r["type"] == "step"]
        loss = run["series"]["loss"]
        assert loss["points"] == 4 and loss["last"] == steps[-1]["loss"]
        assert loss["best"] == min(r["loss"] for r in steps)
        assert run["series"]["lr"]["last"] == steps[-1]["lr"] and "best" not in run["series"]["lr"]
        wait = run["series"]["data_wait"]["last"]
        assert wait == pytest.approx(steps[-1]["data_time_s"] / steps[-1]["step_time_s"])
        assert [e["kind"] for e in run["events"]] == [r["kind"] for r in records if r["type"] == "event"]
    assert "AP" not in report["runs"][0]["series"] and report["runs"][1]["series"]["AP"]["points"] == 1


def test_without_matplotlib_the_figure_is_one_line_and_the_summary_still_works(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = runner.invoke(app, ["plot", *runs, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2 and not (tmp_path / "x.png").exists()
    assert result.output.strip().count("\n") == 0 and "pip install 'detrdoctor[plot]'" in result.output
    assert runner.invoke(app, ["plot", *runs]).exit_code == 0


def test_a_folder_without_metrics_is_one_line(tmp_path):
    result = runner.invoke(app, ["plot", str(tmp_path)])
    assert result.exit_code == 1 and "no metrics.jsonl" in result.output
    assert result.output.strip().count("\n") == 0
