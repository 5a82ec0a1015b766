"""A run that sizes and stops itself: out-of-memory recovery, early stopping and best.pth, on the tiny profile.

Out-of-memory errors come from a callback that raises torch.OutOfMemoryError in a chosen step (or a forward
pre-hook during evaluation): the trainer's real recovery runs, nothing in torch is replaced.
"""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from detr.checkpoint import load_checkpoint_file
from detr.config import load_config_file
from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.cli import app
from detrdoctor.profiles import load_profile


class OutOfMemoryAt(Callback):
    """Raises torch.OutOfMemoryError once, after the backward of step `step`; keeps each attempt's gradients."""

    def __init__(self, step: int) -> None:
        self.step, self.raised = step, False
        self.gradients: list[list[torch.Tensor]] = []

    def after_backward(self, trainer: TrainerView, ctx: StepContext) -> None:
        if ctx.step != self.step:
            return
        self.gradients.append([p.grad.clone() for _, p in trainer.grad_params if p.grad is not None])
        if not self.raised:
            self.raised = True
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (raised by the test)")


def events(run_dir, kind: str) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["type"] == "event" and r["kind"] == kind]


def test_out_of_memory_in_the_first_step_retries_at_half_the_batch_with_the_same_gradient(tiny_cfg, tmp_path):
    tiny_cfg.train.max_steps = 1
    fault = OutOfMemoryAt(step=1)
    summary = Trainer(tiny_cfg, callbacks=[fault], output_dir=tmp_path).fit()
    assert summary["exit_code"] == 0 and summary["steps"] == 1
    (retry,) = events(tmp_path, "oom_retry")
    assert retry["step"] == 1 and retry["phase"] == "train"
    assert (retry["batch_size"], retry["new_batch_size"], retry["effective_batch"]) == (2, 1, 2)
    assert retry["accumulation_steps"] == 2
    # The first attempt's gradient is the whole batch's; the retry accumulated two one-image passes.
    whole, accumulated = fault.gradients
    assert len(whole) == len(accumulated) > 0
    for full, parts in zip(whole, accumulated):
        torch.testing.assert_close(parts, full, rtol=1e-4, atol=1e-6)
    resolved = load_config_file(tmp_path / "config.toml").train  # a resumed run starts at the size that fits
    assert (resolved.batch_size, resolved.effective_batch) == (1, 2)


def test_out_of_memory_later_stops_with_the_last_finished_steps_checkpoint_and_one_line(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs, tiny_cfg.train.max_steps = 4, 25  # 8 steps per epoch: step 20 is the 4th of epoch 2
    trainer = Trainer(tiny_cfg, callbacks=[OutOfMemoryAt(step=20)], output_dir=tmp_path, batch_advisor=lambda: 1)
    summary = trainer.fit()
    assert summary["exit_code"] == 1 and summary["steps"] == 19
    assert not events(tmp_path, "oom_retry")
    (stopped,) = events(tmp_path, "stopped")
    line = stopped["message"]
    assert stopped["reason"] == "out_of_memory" and "\n" not in line
    for part in ("step 20", "batch of 2 images", "peak", "memprofile recommends --batch-size 1", "step 19 written"):
        assert part in line, (part, line)
    ckpt = load_checkpoint_file(tmp_path / "checkpoint.pth")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (19, 2, 3)
    tiny_cfg.train.resume, tiny_cfg.train.max_steps = str(tmp_path / "checkpoint.pth"), 20
    assert Trainer(tiny_cfg, output_dir=tmp_path).fit()["steps"] == 20  # continues at the batch that failed


class OutOfMemoryInEvaluation(Callback):
    """Makes the model's first evaluation forward pass of more than one image run out of memory."""

    def on_train_start(self, trainer: TrainerView) -> None:
        def hook(module: torch.nn.Module, args: tuple) -> None:
            if not module.training and args[0].shape[0] > 1 and not self.raised:
                self.raised = True
                raise torch.OutOfMemoryError("CUDA out of memory (raised by the test)")

        self.raised = False
        trainer.model_without_ddp.register_forward_pre_hook(hook)


def test_out_of_memory_in_evaluation_evaluates_again_at_half_the_batch(tiny_cfg, tmp_path):
    tiny_cfg.train.epochs, tiny_cfg.train.eval_every, tiny_cfg.train.max_steps = 1, 1, 1
    summary = Trainer(tiny_cfg, callbacks=[OutOfMemoryInEvaluation()], output_dir=tmp_path).fit()
    assert summary["exit_code"] == 0
    (retry,) = events(tmp_path, "oom_retry")
    assert (retry["phase"], retry["batch_size"], retry["new_batch_size"]) == ("eval", 2, 1)
    (evaluation,) = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["type"] == "eval"]
    assert evaluation["batch_size"] == 1 and evaluation["AP"] is not None


@pytest.fixture(scope="module")
def plateaued_run(tmp_path_factory):
    """A tiny run whose weights stop changing after its first epoch (lr × 0 from then on: AdamW then leaves
    every weight as it is), evaluated after every epoch: every later evaluation equals the first exactly."""
    cfg = load_profile("tiny")
    t = cfg.train
    t.epochs, t.eval_every, t.lr_drop, t.lr_drop_factor = 10, 1, 1, 0.0
    t.early_stop_patience, t.early_stop_min_delta = 1, 0.0
    run = tmp_path_factory.mktemp("plateau")
    trainer = Trainer(cfg, output_dir=run)
    steps_per_epoch = trainer.train_loader.batch_sampler.batches_per_epoch
    return run, trainer.fit(), steps_per_epoch


def test_a_plateaued_run_stops_after_the_patience_with_the_best_evaluations_weights(plateaued_run):
    run, summary, per_epoch = plateaued_run
    evals = [r for r in read_metrics(run / "metrics.jsonl") if r["type"] == "eval"]
    # The first evaluation is the best (nothing later can beat it); one more without a gain ends the run.
    assert [r["step"] for r in evals] == [per_epoch, 2 * per_epoch]
    assert summary["early_stopped"] and summary["exit_code"] == 0 and summary["steps"] == 2 * per_epoch
    assert [r["new_best"] for r in evals] == [True, False]
    assert all(r["best"] == {"metric": "AP", "value": evals[0]["AP"], "step": per_epoch} for r in evals)
    (stop,) = events(run, "early_stop")
    assert stop["step"] == 2 * per_epoch and stop["best"]["step"] == per_epoch and stop["patience"] == 1
    best = load_checkpoint_file(run / "best.pth")
    last = load_checkpoint_file(run / "checkpoint.pth")
    assert set(best) == set(last) | {"best"}
    assert best["best"] == {"metric": "AP", "value": evals[0]["AP"], "step": per_epoch}
    assert best["global_step"] == per_epoch and last["global_step"] == 2 * per_epoch


def test_evaluate_and_plot_take_the_run_folders_best(plateaued_run):
    run, _, per_epoch = plateaued_run
    result = CliRunner().invoke(app, ["evaluate", "--weights", str(run), "--json"])
    assert result.exit_code == 0, result.output
    assert f"weights: {run / 'best.pth'}" in result.output
    scored = json.loads(result.output.strip().splitlines()[-1])
    first = next(r for r in read_metrics(run / "metrics.jsonl") if r["type"] == "eval")
    assert scored["AP"] == first["AP"]  # the same weights through the same scoring: best.pth is the first eval's
    plotted = CliRunner().invoke(app, ["plot", str(run), "--json"])
    assert plotted.exit_code == 0, plotted.output
    assert json.loads(plotted.output)["runs"][0]["best"]["step"] == per_epoch


def test_train_batch_size_auto_records_the_resolved_int_and_an_event(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--profile", "tiny", "--batch-size", "auto", "--gpu-memory", "8GiB", "--effective-batch", "4"]
    result = CliRunner().invoke(app, [*args, "--max-steps", "1", "--no-dashboard", "--output-dir", str(run)])
    assert result.exit_code == 0, result.output
    (chosen,) = events(run, "batch_size_auto")
    assert chosen["source"] == "estimated" and chosen["margin"] == 0.1 and chosen["target"] == "8 GiB"
    assert chosen["batch_size"] == 4  # tiny images on 8 GiB: the optimizer's batch caps the answer
    resolved = load_config_file(run / "config.toml").train
    assert (resolved.batch_size, resolved.effective_batch) == (4, 4)
    assert "batch_size_auto" in result.output
