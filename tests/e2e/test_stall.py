"""The stall detector: a DataLoader worker blocked on a read is dumped and named; limits; py-spy
missing; on_stall="stop"."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest
from pyspy_support import attach_problem

from detr.engine.callbacks import Callback
from detrdoctor import pyspy
from detrdoctor.callbacks.stall import STALL_EXIT_CODE, StallDetector

# A tiny training loop whose dataset opens a named pipe for its third image: nothing ever writes to
# it, so the DataLoader worker blocks in open() and the loop waits for a batch that never comes.
DRIVER = """
import json, sys
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader, Dataset

from detrdoctor.callbacks.stall import StallDetector


def open_fifo_image(path):
    with open(path, "rb") as f:
        return torch.tensor(len(f.read()))


class FifoDataset(Dataset):
    def __init__(self, fifo):
        self.fifo = fifo

    def __len__(self):
        return 5

    def __getitem__(self, index):
        return open_fifo_image(self.fifo) if index == 2 else torch.tensor(index)


class Trainer:  # what the detector uses of detr's Trainer
    rank, world_size, global_step, is_main = 0, 1, 0, True

    def __init__(self, output_dir):
        self.output_dir = Path(output_dir)

    def emit_event(self, kind, message, severity="info", **fields):
        print(json.dumps({"kind": kind, "severity": severity, "message": message, **fields}), flush=True)

    def request_stop(self, reason, exit_code=1):
        raise AssertionError("on_stall=wait must not stop the run")


trainer = Trainer(sys.argv[2])
detector = StallDetector(min_limit_s=1.0, factor=10.0, first_step_limit_s=60.0)
detector.on_train_start(trainer)
loader = DataLoader(FifoDataset(sys.argv[1]), batch_size=1, num_workers=1)
for step, batch in enumerate(loader, 1):
    trainer.global_step = step
    detector.on_step_end(trainer, SimpleNamespace(step=step, timings={"step": 0.01}), None)
detector.on_train_end(trainer, {})
print(json.dumps({"kind": "done", "steps": step}), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.skipif(attach_problem() is not None, reason=f"{attach_problem()}")
def test_blocked_worker_read_is_dumped_and_named(tmp_path):
    fifo = tmp_path / "image.jpg"
    os.mkfifo(fifo)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    # Its own process group, so a failing test can end the driver and its blocked worker together.
    child = subprocess.Popen(
        [sys.executable, str(driver), str(fifo), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        # The first line the driver prints is the stall event (torch's import included, well within a minute).
        assert select.select([child.stdout], [], [], 120)[0], "no stall reported"
        stall = json.loads(child.stdout.readline())
        assert stall["kind"] == "stall" and stall["severity"] == "warning"
        assert stall["path"] == str(tmp_path / "stall-3-1.txt")  # step 3 never completes; first dump
        dump = (tmp_path / "stall-3-1.txt").read_text()
        assert "open_fifo_image" in dump and "FifoDataset.__getitem__" in dump
        workers = [f for f in stall["frames"] if f["pid"] != child.pid]
        assert [f["function"] for f in workers] == ["open_fifo_image"]
        assert stall["message"].startswith("no step for") and "(step 3, limit 1 s): pid " in stall["message"]
        assert "in open_fifo_image (driver.py:" in stall["message"] and "; trainer in " in stall["message"]
        # A writer unblocks the worker (the blocked open() counts as a reader): the loop then finishes.
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.write(fd, b"jpeg")
        os.close(fd)
        out, _ = child.communicate(timeout=120)
        later = [json.loads(line) for line in out.splitlines()]  # more dumps of the same stall may precede the end
        assert later[-1] == {"kind": "done", "steps": 5} and all(e["kind"] == "stall" for e in later[:-1])
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


class FakeTrainer:
    """Collects events; `stalled` is set when the detector reports one."""

    rank, world_size, global_step, is_main = 0, 1, 0, True

    def __init__(self, output_dir):
        self.output_dir = output_dir
        self.events: list[dict] = []
        self.stalled = threading.Event()
        self.stop_reason, self.stop_code = None, None
        self.stop_requested = threading.Event()

    def emit_event(self, kind, message, severity="info", **fields):
        self.events.append({"kind": kind, "message": message, "severity": severity, **fields})
        self.stalled.set()

    def request_stop(self, reason, exit_code=1):
        self.stop_reason, self.stop_code = reason, exit_code
        self.stop_requested.set()


def step(detector, trainer, number, seconds):
    detector.on_step_end(trainer, SimpleNamespace(step=number, timings={"step": seconds}), None)


def test_limit_follows_the_median_step_time(tmp_path):
    detector = StallDetector(min_limit_s=60.0, factor=10.0, first_step_limit_s=300.0)
    assert detector.limit_s() == 300.0  # nothing measured yet: start-up may be slow
    trainer = FakeTrainer(tmp_path)
    for number, seconds in enumerate([0.5, 2.0, 30.0], 1):
        step(detector, trainer, number, seconds)
    assert detector.limit_s() == 60.0  # 10 × 2 s is below the floor
    for number in range(4, 10):
        step(detector, trainer, number, 9.0)
    assert detector.limit_s() == 90.0


def test_without_pyspy_the_stall_is_reported_and_the_fix_said_once(tmp_path, monkeypatch):
    monkeypatch.setattr(pyspy, "find_pyspy", lambda: None)
    monkeypatch.setattr(pyspy, "_explained", set())
    trainer = FakeTrainer(tmp_path)
    detector = StallDetector(min_limit_s=0.2, first_step_limit_s=0.2, max_dumps=2)
    detector.on_train_start(trainer)
    try:
        assert trainer.stalled.wait(30)
        trainer.stalled.clear()
        assert trainer.stalled.wait(30)  # the same stall, one limit later
    finally:
        detector.on_train_end(trainer, {})
    first, second = trainer.events[:2]
    assert first["kind"] == second["kind"] == "stall" and first["path"] is None
    assert first["message"].startswith("no step for") and "(step 1, limit 0 s)" in first["message"]
    assert "pip install py-spy" in first["message"] and "pip install" not in second["message"]


def test_evaluation_pauses_the_detector(tmp_path, monkeypatch):
    monkeypatch.setattr(pyspy, "find_pyspy", lambda: None)
    trainer = FakeTrainer(tmp_path)
    detector = StallDetector(min_limit_s=0.3, first_step_limit_s=0.3)
    detector.on_train_start(trainer)
    detector.on_eval_start(trainer)
    try:
        assert not trainer.stalled.wait(1.0)  # three limits of evaluation: no stall
    finally:
        detector.on_train_end(trainer, {})
    assert trainer.events == []


def test_on_stall_stop_asks_the_trainer_to_stop_without_raising_into_it(tmp_path, monkeypatch):
    monkeypatch.setattr(pyspy, "find_pyspy", lambda: None)
    trainer = FakeTrainer(tmp_path)
    detector = StallDetector(min_limit_s=0.2, first_step_limit_s=0.2, on_stall="stop")
    detector.on_train_start(trainer)
    try:
        assert trainer.stop_requested.wait(60)
    finally:
        detector.on_train_end(trainer, {})  # the run ends before the grace period, or the process would exit
    assert trainer.stop_reason.startswith("stalled: no step for 0 s (step 1")
    assert trainer.stop_code == STALL_EXIT_CODE


def test_stall_settings_set_the_limit_and_action_and_zero_turns_detection_off(tiny_cfg):
    from detrdoctor.callbacks import build_callbacks

    tiny_cfg.diagnostics.stall_after, tiny_cfg.diagnostics.on_stall = 20.0, "stop"
    (detector,) = (cb for cb in build_callbacks(tiny_cfg) if isinstance(cb, StallDetector))
    assert (detector.min_limit_s, detector.on_stall, detector.first_step_limit_s) == (20.0, "stop", 300.0)
    tiny_cfg.diagnostics.stall_after = 0.0
    assert not any(isinstance(cb, StallDetector) for cb in build_callbacks(tiny_cfg))


def stalled_copy(tiny_cfg, tmp_path, blocked_step: int):
    """A copy of the tiny synthetic dataset whose image of training step `blocked_step` (epoch 0) is a named pipe,
    and that image's real file."""
    import shutil

    from detr.data.root import synthetic_root
    from detr.engine.trainer import Trainer

    root = tmp_path / "coco"
    shutil.copytree(synthetic_root(tiny_cfg.data), root)
    tiny_cfg.data.coco_path = str(root)
    probe = Trainer(tiny_cfg, output_dir=tmp_path / "probe")
    probe.train_loader.batch_sampler.set_epoch(0)
    index = probe.train_loader.batch_sampler.rank_batches()[blocked_step - 1][0]
    image = probe.train_set.image_path(index)
    shutil.move(image, tmp_path / "image.jpg")
    os.mkfifo(image)
    return image, tmp_path / "image.jpg"


class InterruptAt(Callback):
    """Sends Ctrl-C once the run waits for the batch of `step`, which never comes: the wait ends at once."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, ctx, record) -> None:
        if ctx.step == self.step - 1:
            threading.Thread(target=self.send, daemon=True).start()

    @staticmethod
    def send() -> None:
        threading.Event().wait(0.5)  # the loop is then waiting, or about to: either way the stop is the same
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("how", ["stall", "ctrl-c"])
def test_a_stop_while_waiting_for_data_checkpoints_the_last_finished_step(tiny_cfg, tmp_path, monkeypatch, how):
    from detr.engine.checkpointing import load_training_checkpoint
    from detr.engine.metrics import read_metrics
    from detr.engine.trainer import Trainer

    monkeypatch.setattr(pyspy, "find_pyspy", lambda: None)  # the dump is not what this test is about
    tiny_cfg.train.max_steps = 7
    tiny_cfg.model.dropout = 0.1  # the resumed steps draw from the RNG as the last finished step left it
    tiny_cfg.data.num_workers = 1
    image, real = stalled_copy(tiny_cfg, tmp_path, blocked_step=5)

    if how == "stall":
        callbacks = [
            StallDetector(min_limit_s=2.0, factor=10.0, first_step_limit_s=60.0, on_stall="stop", native=False)
        ]
    else:
        callbacks = [InterruptAt(5)]
    try:
        summary = Trainer(tiny_cfg, callbacks=callbacks, output_dir=tmp_path / "run").fit()
    finally:
        try:  # a writer releases a worker still blocked on the pipe
            os.close(os.open(image, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert summary["steps"] == 4 and summary["exit_code"] == (1 if how == "stall" else 130)
    ckpt = load_training_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (4, 0, 4)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    final = [r for r in records if r["type"] == "event"][-1]
    if how == "stall":
        assert final["kind"] == "stopped" and final["severity"] == "error"
        assert final["message"].startswith("stalled: no step for") and "--resume" in final["message"]
    else:
        assert final["kind"] == "interrupted" and "checkpoint of step 4 written" in final["message"]

    image.unlink()
    real.rename(image)
    tiny_cfg.data.num_workers = 0  # the same batches, without a worker to start
    tiny_cfg.train.resume = str(tmp_path / "run" / "checkpoint.pth")
    Trainer(tiny_cfg, output_dir=tmp_path / "run").fit()
    tiny_cfg.train.resume = ""
    Trainer(tiny_cfg, output_dir=tmp_path / "whole").fit()
    resumed = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["type"] == "step"]
    whole = [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "whole" / "metrics.jsonl") if r["type"] == "step"]
    assert resumed == whole  # steps 1–4, then 5–7 after the resume: none skipped, none repeated, the same losses


# Without DataLoader workers the loader blocks in the kernel's open() of the pipe, where no exception could
# reach it; the loop waits for that fetch in another thread, so it still stops with the last finished step's
# checkpoint and returns its exit code.
INLINE_DRIVER = """
import sys
from pathlib import Path

from detr.engine.trainer import Trainer
from detrdoctor import pyspy
from detrdoctor.callbacks import stall
from detrdoctor.profiles import load_profile

pyspy.find_pyspy = lambda: None
cfg = load_profile("tiny")
cfg.train.max_steps, cfg.data.coco_path, cfg.data.num_workers = 7, sys.argv[1], 0
detector = stall.StallDetector(min_limit_s=2.0, factor=10.0, first_step_limit_s=60.0, on_stall="stop", native=False)
sys.exit(Trainer(cfg, callbacks=[detector], output_dir=Path(sys.argv[2])).fit()["exit_code"])
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_stall_inside_the_kernel_without_workers_still_checkpoints(tiny_cfg, tmp_path):
    from detr.engine.checkpointing import load_training_checkpoint
    from detr.engine.metrics import read_metrics

    stalled_copy(tiny_cfg, tmp_path, blocked_step=5)
    driver = tmp_path / "driver.py"
    driver.write_text(INLINE_DRIVER)
    child = subprocess.run(
        [sys.executable, str(driver), tiny_cfg.data.coco_path, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert child.returncode == STALL_EXIT_CODE, child.stderr[-2000:]
    ckpt = load_training_checkpoint(tmp_path / "run" / "checkpoint.pth")
    assert (ckpt["global_step"], ckpt["epoch"], ckpt["batch_in_epoch"]) == (4, 0, 4)
    stopped = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r.get("kind") == "stopped"]
    assert len(stopped) == 1 and stopped[0]["message"].startswith("stalled: no step for")
