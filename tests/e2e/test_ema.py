"""The weight average (EMA): its arithmetic, exact resume, and that evaluation scores it."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detr.engine.ema import ModelEMA
from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.cli import app


def test_the_average_warms_up_then_follows_at_the_decay():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    start = model[0].weight.detach().clone()
    ema = ModelEMA(model, decay=0.9)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    model(torch.randn(4, 3))  # a training-mode forward moves the BatchNorm statistics and its step counter
    ema.update()
    decay = 2 / 11  # warm-up: min(0.9, (1 + n) / (10 + n)) with n = 1
    assert torch.allclose(ema.module[0].weight, decay * start + (1 - decay))
    assert torch.allclose(ema.module[1].running_mean, (1 - decay) * model[1].running_mean)
    assert int(ema.module[1].num_batches_tracked) == 1  # integer buffers are copied, not averaged
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.module[0].weight, torch.ones(2, 3), atol=1e-6)
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training


def test_resume_continues_the_average_exactly(tiny_cfg, tmp_path):
    tiny_cfg.train.ema_decay = 0.9
    tiny_cfg.train.max_steps = 7
    full = Trainer(tiny_cfg, output_dir=tmp_path / "full")
    full.fit()
    tiny_cfg.train.max_steps = 3
    Trainer(tiny_cfg, output_dir=tmp_path / "part").fit()
    tiny_cfg.train.max_steps = 7
    tiny_cfg.train.resume = str(tmp_path / "part" / "checkpoint.pth")
    resumed = Trainer(tiny_cfg)
    resumed.fit()
    assert resumed.ema.updates == full.ema.updates == 7
    expected, got = full.ema.module.state_dict(), resumed.ema.module.state_dict()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_training_and_evaluate_score_the_average(tiny_cfg, tmp_path):
    tiny_cfg.train.ema_decay = 0.5
    tiny_cfg.train.max_steps = 3
    tiny_cfg.train.eval_every = 1
    Trainer(tiny_cfg, output_dir=tmp_path).fit()
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ckpt["ema_updates"] == 3 and ckpt["model_ema"].keys() == ckpt["model"].keys()
    assert not torch.equal(ckpt["model_ema"]["class_embed.weight"], ckpt["model"]["class_embed.weight"])
    trained = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "eval"][-1]
    assert trained["ema"] is True

    result = CliRunner().invoke(app, ["evaluate", "--weights", str(tmp_path / "checkpoint.pth"), "--json"])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.output)
    assert evaluated["ema"] is True
    assert evaluated["AP"] == pytest.approx(trained["AP"], abs=1e-9)
