"""A run folder belongs to one run, and a preempted run resumes exactly: `detrdoctor train` in child processes,
synchronised through their output (a step line), never through sleeps."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from detr.engine.metrics import read_metrics
from detr.engine.runlock import LOCK_NAME, RunLock
from detr.engine.trainer import EXIT_PREEMPTED
from detrdoctor.cli import app

# One intra-op thread in every child: runs compared loss for loss share the same process settings.
CHILD_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
# A frozen backbone: a third of the checkpoint to write, and faster steps.
FAST = ["--lr-backbone", "0", "--stall-after", "0"]
TRAIN = [sys.executable, "-m", "detrdoctor.cli", "train", "--profile", "tiny", "--no-dashboard", *FAST]


def start_train(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TRAIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=CHILD_ENV,
    )


def wait_for_line(child: subprocess.Popen[str], prefix: str) -> list[str]:
    """The child's lines up to the first that starts with `prefix` (its output is line-buffered)."""
    assert child.stdout is not None
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    child.wait()
    raise AssertionError(f"the child ended (exit {child.returncode}) before a {prefix!r} line:\n{''.join(lines)}")


def run_train(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRAIN, *args], capture_output=True, text=True, env=CHILD_ENV, timeout=600)


def step_losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if r["type"] == "step"}


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


STEPS = "4"


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """The step losses of an uninterrupted run, trained the way the preempted ones are."""
    run = tmp_path_factory.mktemp("whole") / "run"
    result = run_train("--max-steps", STEPS, "--output-dir", str(run))
    assert result.returncode == 0, result.stdout + result.stderr
    return step_losses(run)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["SIGTERM", "SIGUSR1"])
def test_a_signal_checkpoints_the_last_step_and_resume_auto_continues_exactly(whole_run, tmp_path, signum):
    run = tmp_path / "run"
    command = ("--max-steps", STEPS, "--output-dir", str(run), "--resume", "auto")  # the job script's one line
    child = start_train(*command)
    wait_for_line(child, "step 1/")
    child.send_signal(signum)
    rest, _ = child.communicate(timeout=600)
    assert child.returncode == EXIT_PREEMPTED, rest
    assert "Traceback" not in rest

    steps = step_losses(run)
    last = max(steps)
    assert last <= 2  # the step in flight when the signal came (or the one before), not the run's end
    ckpt = torch.load(run / "checkpoint.pth", weights_only=True)
    assert ckpt["global_step"] == last
    [event] = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "preempted"]
    assert (event["step"], event["signal"]) == (last, signal.Signals(signum).name)
    assert [line for line in rest.splitlines() if line.startswith("preempted")] == [
        f"preempted step {last}: {event['message']}"
    ]

    # What a kill -9 in a later write would leave: a temporary checkpoint and a torn metrics line.
    (run / ".checkpoint.pth.x1y2z3.tmp").write_bytes(b"\0" * 1000)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"type": "step", "st')
    resumed = run_train(*command)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "removed 1 temporary checkpoint file" in resumed.stdout
    assert "removed a torn last line" in resumed.stdout
    assert not list(run.glob(".*.tmp"))
    assert step_losses(run) == whole_run  # every step once, each loss as in the uninterrupted run


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    first = start_train("--max-steps", "50", "--output-dir", str(run))
    try:
        wait_for_line(first, "step 1/")
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock for as long as the second run takes
        try:
            before = digest(run)
            second = run_train("--max-steps", "1", "--output-dir", str(run), "--overwrite")
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert second.returncode == 2, second.stdout + second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"PID {first.pid} on {socket.gethostname()}" in lines[0], second.stderr
        assert digest(run) == before  # --overwrite deleted nothing: the folder was not its to take
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=600)
        assert first.returncode == EXIT_PREEMPTED
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


HOLDER = """
import sys
from detr.engine.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_the_lock_of_a_killed_run_is_taken_over_and_said(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    with pytest.raises(Exception, match=f"PID {holder.pid} on "):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    lock = RunLock(tmp_path)
    stale = lock.acquire()
    assert stale is not None and stale.pid == holder.pid
    lock.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # a clean end leaves nothing to take over
    again = RunLock(tmp_path)
    assert again.acquire() is None
    again.release()


def test_resume_of_a_copied_run_writes_into_the_copy_and_a_new_run_never_replaces_one(tmp_path):
    runner = CliRunner()
    original, copy = tmp_path / "original", tmp_path / "copy"
    base = ["train", "--profile", "tiny", "--no-dashboard", *FAST]
    result = runner.invoke(app, [*base, "--max-steps", "2", "--output-dir", str(original)])
    assert result.exit_code == 0, result.output
    shutil.copytree(original, copy)
    before = digest(original)

    # the copy's config.toml names the original folder as output_dir: it must not decide
    result = runner.invoke(
        app, ["train", "--no-dashboard", "--resume", str(copy / "checkpoint.pth"), "--max-steps", "3"]
    )
    assert result.exit_code == 0, result.output
    assert digest(original) == before
    assert torch.load(copy / "checkpoint.pth", weights_only=True)["global_step"] == 3
    assert sorted(step_losses(copy)) == [1, 2, 3]

    result = runner.invoke(app, [*base, "--max-steps", "1", "--output-dir", str(original)])
    assert result.exit_code == 2
    assert "already holds a run" in result.output and "--overwrite" in result.output
    assert digest(original) == before


FULL_DISK = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))  # what a full disk does to a large write
from detrdoctor.cli import app
sys.argv = ["detrdoctor", *sys.argv[1:]]
app()
"""


def test_a_full_disk_is_one_line_and_the_previous_checkpoint_stays(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["train", "--profile", "tiny", "--no-dashboard", *FAST, "--max-steps", "1", "--output-dir", str(run)]
    )
    assert result.exit_code == 0, result.output
    before = (run / "checkpoint.pth").read_bytes()
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_DISK), "train", "--no-dashboard", "--resume", str(run)]
        + ["--max-steps", "2"],
        capture_output=True,
        text=True,
        env=CHILD_ENV,
        timeout=600,
    )
    assert child.returncode == 1, child.stdout + child.stderr
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1, child.stderr
    assert f"cannot write {run / 'checkpoint.pth'}: File too large" in lines[0]
    assert "the previous checkpoint.pth is intact" in lines[0]
    assert (run / "checkpoint.pth").read_bytes() == before
    assert not list(run.glob(".*.tmp"))


@pytest.mark.parametrize(
    "fault, reason",
    [("parent is a file", "Not a directory"), ("metrics.jsonl is a folder", "Is a directory")]
    + [("config.toml is a folder", "Is a directory")],
)
def test_output_faults_are_one_line(tmp_path, fault, reason):
    run = tmp_path / "run"
    if fault == "parent is a file":
        (tmp_path / "file").write_text("")
        run = tmp_path / "file" / "run"
    else:
        (run / fault.split()[0]).mkdir(parents=True)
    result = CliRunner().invoke(
        app, ["train", "--profile", "tiny", "--no-dashboard", *FAST, "--max-steps", "1", "--output-dir", str(run)]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # not a traceback
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "cannot write" in error[0] and reason in error[0], result.output


def test_resume_of_a_checkpoint_that_does_not_fit_is_the_weights_line(tmp_path):
    from detrdoctor.profiles import resolve_profile

    run = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(
        app, ["train", "--profile", "tiny", "--no-dashboard", *FAST, "--max-steps", "1", "--output-dir", str(run)]
    )
    assert result.exit_code == 0, result.output
    wider = tmp_path / "wider.toml"
    wider.write_text(resolve_profile("tiny").read_text().replace("hidden_dim = 64", "hidden_dim = 32"))
    resumed = runner.invoke(app, ["train", "--profile", str(wider), "--resume", str(run), "--max-steps", "2"])
    fine_tuned = runner.invoke(
        app,
        ["train", "--profile", str(wider), "--weights", str(run / "checkpoint.pth"), "--max-steps", "1"]
        + ["--output-dir", str(tmp_path / "other")],
    )
    assert resumed.exit_code == fine_tuned.exit_code == 1
    line = [x for x in resumed.output.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "does not fit the model" in line[0] and "hidden_dim=64" in line[0], resumed.output
    assert "does not fit the model" in fine_tuned.output
