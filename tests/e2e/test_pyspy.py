"""py-spy: reading dumps, `detrdoctor stack` on a live child, flame graphs, and the message when
py-spy cannot be used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from pyspy_support import attach_problem
from typer.testing import CliRunner

from detrdoctor import pyspy
from detrdoctor.callbacks.flamegraph import CpuProfiler
from detrdoctor.cli import app

needs_pyspy = pytest.mark.skipif(attach_problem() is not None, reason=f"{attach_problem()}")

# A real `py-spy dump --subprocesses --native` of a DataLoader whose worker blocks opening a FIFO.
RECORDED_DUMP = """\
Process 12174: python fifo_ds.py fifo
Python v3.11.7 (/root/.pyenv/versions/3.11.7/bin/python3.11)

Thread 12174 (idle): "MainThread"
    poll (libc.so.6)
    select_poll_poll_impl (selectmodule.c:655)
    _PollLikeSelector.select (selectors.py:415)
    wait (multiprocessing/connection.py:947)
    Queue.get (multiprocessing/queues.py:113)
    _MultiProcessingDataLoaderIter._try_get_data (torch/utils/data/dataloader.py:1293)
    _MultiProcessingDataLoaderIter._get_data (torch/utils/data/dataloader.py:1466)
    <module> (fifo_ds.py:11)
    0x7fb5dfc4524a (libc.so.6)
Thread 12214 (idle): "QueueFeederThread"
    PyThread_acquire_lock_timed (libpython3.11.so.1.0)
    Condition.wait (threading.py:327)
    Queue._feed (multiprocessing/queues.py:231)

--------------------------------------------------------------------------------
Process 12213: python fifo_ds.py fifo
Python v3.11.7 (/root/.pyenv/versions/3.11.7/bin/python3.11)
Parent Process 12174: python fifo_ds.py fifo

Thread 12213 (idle): "MainThread"
    open64 (libc.so.6)
    read_blocking_image (fifo_ds.py:8)
    DS.__getitem__ (fifo_ds.py:6)
    _MapDatasetFetcher.fetch (torch/utils/data/_utils/fetch.py:54)
    _worker_loop (torch/utils/data/_utils/worker.py:375)
"""


def test_parse_dump_finds_where_each_process_waits():
    threads = pyspy.parse_dump(RECORDED_DUMP)
    assert [(t.pid, t.thread) for t in threads] == [
        (12174, "MainThread"),
        (12174, "QueueFeederThread"),
        (12213, "MainThread"),
    ]
    assert threads[0].frames[0] == pyspy.Frame("poll", "libc.so.6", python=False)
    points = pyspy.wait_points(threads, root_pid=12174)
    assert [(p["pid"], p["function"]) for p in points] == [
        (12174, "_MultiProcessingDataLoaderIter._try_get_data"),  # first frame outside the standard library
        (12213, "read_blocking_image"),
    ]
    # The trainer waits for a batch: the worker that owes it comes first.
    assert pyspy.describe_wait(points, 12174) == (
        "pid 12213 in read_blocking_image (fifo_ds.py:8); "
        "trainer in _MultiProcessingDataLoaderIter._try_get_data (torch/utils/data/dataloader.py:1293)"
    )


def test_describe_wait_merges_and_drops_idle_workers():
    def point(pid, function, where):
        return {"pid": pid, "function": function, "frame": f"{function} ({where})"}

    points = [
        point(1, "all_reduce", "torch/distributed/distributed_c10d.py:2"),
        point(2, "_worker_loop", "torch/utils/data/_utils/worker.py:3"),
        point(3, "read", "data.py:9"),
        point(4, "read", "data.py:9"),
    ]
    assert pyspy.describe_wait(points, 1) == (
        "trainer in all_reduce (torch/distributed/distributed_c10d.py:2); pids 3, 4 in read (data.py:9)"
    )


def start_child(body: str) -> subprocess.Popen:
    """A Python child that prints `ready` once it is about to run `body`'s last line."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(body)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


@needs_pyspy
def test_stack_command_names_the_function_a_child_waits_in():
    child = start_child("""
        import sys

        def wait_in_named_function():
            print("ready", flush=True)
            sys.stdin.readline()

        wait_in_named_function()
    """)
    try:
        assert child.stdout.readline() == "ready\n"
        result = CliRunner().invoke(app, ["stack", str(child.pid)])
        assert result.exit_code == 0, result.output
        assert f"Process {child.pid}" in result.output
        assert "wait_in_named_function (<string>:6)" in result.output
        assert "where they wait" in result.output
    finally:
        child.communicate("\n", timeout=30)


def test_stack_of_a_missing_process_is_one_error_line():
    result = CliRunner().invoke(app, ["stack", "999999999"])
    assert result.exit_code == 1
    assert "no process with pid 999999999" in result.output


def test_missing_pyspy_names_the_install(monkeypatch):
    monkeypatch.setattr(pyspy, "find_pyspy", lambda: None)
    with pytest.raises(pyspy.PySpyUnavailable, match="pip install py-spy"):
        pyspy.dump(os.getpid())


def test_permission_errors_come_with_the_fix():
    error = pyspy._failure(42, "Error: Operation not permitted (os error 1)\n")
    assert isinstance(error, pyspy.PySpyUnavailable)
    assert "--cap-add SYS_PTRACE" in str(error) and "kernel.yama.ptrace_scope=0" in str(error)
    assert "reboot" in pyspy.ptrace_fix(scope=3)


def test_the_fix_is_explained_once(monkeypatch):
    monkeypatch.setattr(pyspy, "_explained", set())
    assert pyspy.explain_once("pyspy", "do this") == "do this"
    assert pyspy.explain_once("pyspy", "do this") is None


@needs_pyspy
def test_flame_graph_of_a_busy_child(tmp_path):
    child = start_child("""
        import select, sys

        def spin_for_the_flame_graph():
            print("ready", flush=True)
            rounds = 0
            while not select.select([sys.stdin], [], [], 0)[0]:
                sum(i * i for i in range(2000))
                rounds += 1
                if rounds % 200 == 0:
                    print("tick", flush=True)

        spin_for_the_flame_graph()
    """)
    recorder = pyspy.FlameRecorder(child.pid, tmp_path / "flame")
    try:
        assert child.stdout.readline() == "ready\n"
        recorder.start()
        # Each recorder logs "Sampling process ..." once attached: count the child's ticks until both have,
        # then let it run some more under them.
        logs = [log for _, log in recorder._procs.values()]
        for _ in range(2000):
            if all(b"Sampling" in (log.seek(0) or log.read()) for log in logs):
                break
            assert recorder.failure() is None
            assert child.stdout.readline() == "tick\n"
        for _ in range(20):
            assert child.stdout.readline() == "tick\n"
        recorder.stop()
        paths, error = recorder.wait()
    finally:
        child.communicate("\n", timeout=30)
    assert error is None
    assert sorted(p.name for p in paths) == ["flame.speedscope.json", "flame.svg"]
    assert "spin_for_the_flame_graph" in (tmp_path / "flame.svg").read_text()
    profile = json.loads((tmp_path / "flame.speedscope.json").read_text())
    assert any(frame["name"] == "spin_for_the_flame_graph" for frame in profile["shared"]["frames"])


class FakeRecorder:
    """Stands in for FlameRecorder: records what the profiler asks of it and writes the files on wait."""

    started: list[FakeRecorder] = []

    def __init__(self, pid, stem):
        self.stem, self.calls = stem, []
        FakeRecorder.started.append(self)

    def start(self):
        self.calls.append("start")

    def failure(self):
        return None

    def stop(self):
        self.calls.append("stop")

    def done(self):
        return "stop" in self.calls

    def wait(self):
        path = self.stem.with_suffix(".svg")
        path.write_text("<svg/>")
        return [path], None


def test_cpu_profiler_records_the_requested_window(tmp_path, monkeypatch):
    monkeypatch.setattr(pyspy, "FlameRecorder", FakeRecorder)
    FakeRecorder.started = []
    events = []
    trainer = SimpleNamespace(
        is_main=True,
        global_step=0,
        output_dir=tmp_path,
        emit_event=lambda kind, message, severity="info", **f: events.append((kind, message, f)),
    )
    profiler = CpuProfiler(steps=4, warmup=2)
    profiler.on_train_start(trainer)
    for step in range(1, 11):
        profiler.on_step_end(trainer, SimpleNamespace(step=step), None)
        if step == 2:
            assert FakeRecorder.started and FakeRecorder.started[0].calls == ["start"]  # before step 3 runs
        if step == 6:
            assert FakeRecorder.started[0].calls == ["start", "stop"]  # after step 6
    profiler.on_train_end(trainer, {})
    [recorder] = FakeRecorder.started
    assert recorder.stem.name == "flamegraph-steps-3-6"
    assert [kind for kind, _, _ in events] == ["profile_cpu", "profile_cpu"]
    assert "steps 3–6" in events[0][1] and events[1][2]["path"].endswith("flamegraph-steps-3-6.svg")


def test_cpu_profiler_says_when_the_run_is_too_short(tmp_path):
    events = []
    trainer = SimpleNamespace(
        is_main=True,
        global_step=0,
        output_dir=tmp_path,
        emit_event=lambda kind, message, severity="info", **f: events.append((severity, message)),
    )
    profiler = CpuProfiler(steps=4, warmup=3)
    profiler.on_train_start(trainer)
    profiler.on_step_end(trainer, SimpleNamespace(step=1), None)
    profiler.on_train_end(trainer, {})
    assert events == [("warning", "no flame graph: the run ended before step 4")]
