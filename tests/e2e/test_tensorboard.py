"""`train --tensorboard`: the event files hold metrics.jsonl's scalars and events; without the package, one line."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.callbacks import build_callbacks
from detrdoctor.cli import app


def test_event_files_hold_the_metrics_jsonl_scalars_and_the_events(tiny_cfg, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    tiny_cfg.train.max_steps = 3
    tiny_cfg.train.eval_every = 1
    tiny_cfg.diagnostics.tensorboard = True
    tiny_cfg.diagnostics.dashboard = False
    Trainer(tiny_cfg, callbacks=build_callbacks(tiny_cfg), output_dir=tmp_path).fit()

    records = read_metrics(tmp_path / "metrics.jsonl")
    accumulator = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    for kind, prefix in (("step", "train"), ("eval", "eval")):
        written = [r for r in records if r["type"] == kind]
        assert written
        for key in ("loss", "loss_ce", "lr", "grad_norm", "images_per_s") if kind == "step" else ("AP", "AP50"):
            points = [(e.step, e.value) for e in accumulator.Scalars(f"{prefix}/{key}")]
            assert points == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in written], key
    events = {r["kind"] for r in records if r["type"] == "event"}
    assert "data_summary" in events
    assert {f"events/{kind}/text_summary" for kind in events} <= set(tags["tensors"])
    summary = next(r for r in records if r["type"] == "event" and r["kind"] == "data_summary")
    (text,) = accumulator.Tensors("events/data_summary/text_summary")
    assert summary["message"] in text.tensor_proto.string_val[0].decode()


def test_without_the_package_train_stops_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an environment without it looks like to import
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--profile", "tiny", "--tensorboard", "--output-dir", str(run)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "pip install 'detrdoctor[tensorboard]'" in result.output
    assert not run.exists()
