"""The live dashboard: rendering from hand-made state and telemetry on a fake terminal, the choice
between dashboard and plain lines, the callback's lifecycle, and the readers behind the system panel."""

from __future__ import annotations

import io
import sys
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console

from detrdoctor.callbacks import progress_display
from detrdoctor.callbacks.progress import PlainProgress
from detrdoctor.dashboard import Dashboard, render
from detrdoctor.dashboard.live import CudaStepTimer
from detrdoctor.dashboard.state import DashboardState, RunInfo
from detrdoctor.dashboard.telemetry import (
    GpuReading,
    HostReader,
    HostReading,
    NvmlReader,
    Telemetry,
    TorchMemory,
    visible_gpu_selectors,
)

GIB = 1024**3
CPU_ONLY = Telemetry(host=HostReading(cpu_percent=45.0, cpus=2, ram_used=5 * GIB, ram_total=8 * GIB, rss=2 * GIB))
# What NvmlReader and torch_memory return on a two-GPU machine.
TWO_GPUS = Telemetry(
    gpus=(
        GpuReading(0, "NVIDIA H100 80GB HBM3", 97.0, 31 * GIB, 80 * GIB, 67.0, 412.0, 700.0),
        GpuReading(1, "NVIDIA H100 80GB HBM3", 12.0, 2 * GIB, 80 * GIB, 88.0, 95.0, 700.0),
    ),
    torch_memory=TorchMemory(allocated=12 * GIB, reserved=14 * GIB, peak=20 * GIB),
    host=HostReading(cpu_percent=30.0, cpus=16, ram_used=12 * GIB, ram_total=128 * GIB, rss=3 * GIB),
)


def make_state(telemetry: Telemetry, data_s: float = 0.005, steps: int = 123) -> DashboardState:
    """123 steps of 0.16 s with 2 images each, every step logged; one eval and three events."""
    now = [0.0]
    state = DashboardState(clock=lambda: now[0])
    state.start(
        RunInfo(
            run_name="20250101-120000",
            profile="tiny",
            device="cpu",
            world_size=1,
            amp="off",
            total_steps=400,
            steps_per_epoch=8,
            epochs=50,
            clip_max_norm=0.1,
            output_dir="runs/x",
        )
    )
    for step in range(1, steps + 1):
        now[0] += 0.16
        state.add_step(
            step,
            (step - 1) // 8,
            {"data": data_s, "forward": 0.06, "backward": 0.08, "optimizer": 0.01, "step": 0.16},
            images=2,
            stepped=step != 50,
        )
        state.add_record(
            {
                "loss": 20.0 - step / 10,
                "loss_ce": 2.0,
                "loss_bbox": 1.0,
                "loss_giou": 0.9,
                "grad_norm": 100.0 + step,
                "lr": 1e-4,
                "class_error": 50.0,
            }
        )
    state.add_event({"step": 0, "kind": "data_summary", "severity": "info", "message": "16 images, 11 classes"})
    state.add_event(
        {
            "step": 77,
            "kind": "grad_norm_spike",
            "severity": "warning",
            "signal": "zscore",
            "module": "decoder",
            "message": "grad norm 812 is 7.1 MADs above the median",
        }
    )
    state.add_event(
        {
            "step": 90,
            "kind": "stall",
            "severity": "warning",
            "path": "runs/x/stall-91-1.txt",
            "message": "step 91 has not completed after 63 s",
        }
    )
    state.add_eval({"step": 80, "AP": 0.0123, "AP50": 0.0456, "AP75": 0.001})
    state.set_telemetry(telemetry)
    return state


def screen(state: DashboardState, width: int, height: int = 24) -> str:
    console = Console(record=True, width=width, height=height, force_terminal=True, file=io.StringIO())
    console.print(render.dashboard(state.snapshot(), width, height))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_cpu_only_dashboard_fits_the_terminal_and_shows_the_numbers(width):
    text = screen(make_state(CPU_ONLY), width)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= 23 and max(len(line) for line in lines) <= width
    for expected in (
        "20250101-120000",
        "tiny",
        "step 123/400",
        "epoch 16/50",
        "ETA 0:00:44",
        "total",
        "7.700",
        "ce",
        "2.000",
        "AP 0.012",
        "AP50 0.046",  # losses and last eval
        "norm",
        "223.0",
        "skipped 1",
        "⚠ step 77 grad_norm_spike · decoder",  # gradient health
        "12.5 img/s",
        "0.160 s/step",
        "fwd 38%",
        "bwd 50%",
        "data wait 3% compute-bound",
        "CPU  45% of 2",
        "RAM 5.0/8.0 GiB",
        "trainer RSS 2.0 GiB",  # no GPU: the host instead
        "2 warnings",
        "data_summary",
        "stall",
    ):
        assert expected in text, expected
    assert "▁" in text and "█" in text  # sparklines


@pytest.mark.parametrize("width", [80, 120])
def test_gpu_panel_from_recorded_nvml_readings(width):
    text = screen(make_state(TWO_GPUS), width)
    for expected in (
        "GPU · 2× NVIDIA H100 80GB HBM3",
        "0 util  97%",
        "mem 31/80G",
        "67°C",
        "412W",
        "1 util  12%",
        "88°C",
        "alloc 12.0 · resv 14.0 · peak 20.0G",
        "CPU 30% of 16",
    ):
        assert expected in text, expected
    assert "trainer RSS" not in text  # the host gets one line when there are GPUs


def test_starving_data_pipeline_is_called_out():
    text = screen(make_state(CPU_ONLY, data_s=0.08), 80)
    assert "data wait 50% starving" in text


def test_small_terminal_keeps_the_dashboard_within_its_height():
    state = make_state(CPU_ONLY)
    for i in range(30):
        state.add_event({"step": 100 + i, "kind": "corrupt_image", "severity": "warning", "message": f"img{i}.jpg"})
    for height in (24, 40):
        lines = screen(state, 80, height).rstrip("\n").split("\n")
        assert len(lines) == height - 1
    assert "img29.jpg" in screen(state, 80)  # the newest events are the ones shown


def test_summary_lists_results_watchdog_and_files():
    state = make_state(CPU_ONLY)
    state.finish(
        {
            "steps": 123,
            "elapsed_s": 20.0,
            "interrupted": False,
            "exit_code": 0,
            "last_eval": None,
            "checkpoint": "runs/x/checkpoint.pth",
            "corrupt_samples": 0,
            "watchdog": {
                "steps_skipped": 1,
                "events": {"grad_norm_spike": 1},
                "first_warning_step": None,
                "max_grad_norm": {"value": 812.3, "step": 77, "group": "decoder"},
                "update_ratios": {
                    g: 1e-4 for g in ("backbone", "input_proj", "encoder", "decoder", "class_head", "bbox_head")
                },
            },
        }
    )
    console = Console(record=True, width=160, file=io.StringIO())
    console.print(render.summary(state.snapshot()))
    text = console.export_text()
    for expected in (
        "finished 123 steps in 0:00:20",
        "19.90 → 7.700",
        "AP 0.012",
        "12.5 img/s",
        "1 steps skipped",
        "steps skipped 1",
        "grad_norm_spike 1",
        "max grad norm value 812.3, step 77, group decoder",
        "runs/x/stall-91-1.txt",
        "step 77: grad norm 812",
        "runs/x/checkpoint.pth",
    ):
        assert expected in text, expected
    assert "first warning step" not in text and "update ratios" not in text  # empty, and too long to inline


def test_sparkline_scales_to_its_own_range():
    assert render.sparkline([1, 2, 3, 4, 5, 6, 7, 8], 8) == "▁▂▃▄▅▆▇█"
    assert render.sparkline([0, None, float("nan"), 1], 10) == "▁  █"
    assert render.sparkline([1, 10, 100, 1000], 4, log=True) == "▁▃▆█"
    assert render.sparkline(list(range(100)), 5) == "▁▃▅▆█"  # the most recent values
    assert render.sparkline([3, 3], 2) == "▅▅"


# ----------------------------------------------------------------------------- choosing the display


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def as_terminal(monkeypatch) -> None:
    """stdout is an interactive terminal (set in the test body: pytest swaps stdout back between phases)."""
    monkeypatch.setattr(sys, "stdout", TTY())
    monkeypatch.setenv("TERM", "xterm-256color")
    for name in ("RANK", "TTY_COMPATIBLE", "FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(name, raising=False)


def progress(dashboard: bool = True, profile: str = ""):
    return [progress_display(Console(highlight=False), dashboard, profile)]


def test_plain_lines_when_stdout_is_not_a_terminal(monkeypatch):
    as_terminal(monkeypatch)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    [display] = progress()
    assert isinstance(display, PlainProgress)
    monkeypatch.setenv("FORCE_COLOR", "1")  # as in many CI setups: colours, but still no live display
    [display] = progress()
    assert isinstance(display, PlainProgress)


def test_dashboard_on_a_terminal_unless_disabled_or_not_rank_0(monkeypatch):
    as_terminal(monkeypatch)
    [display] = progress(profile="tiny")
    assert isinstance(display, Dashboard) and display.profile == "tiny"
    [display] = progress(dashboard=False)
    assert isinstance(display, PlainProgress)
    monkeypatch.setenv("RANK", "1")
    [display] = progress()
    assert isinstance(display, PlainProgress)


# ----------------------------------------------------------------------------- the callback


def fake_trainer(tmp_path):
    cfg = SimpleNamespace(train=SimpleNamespace(max_steps=4, epochs=2, amp="off", clip_max_norm=0.1))
    loader = SimpleNamespace(batch_sampler=SimpleNamespace(batches_per_epoch=8))
    return SimpleNamespace(
        cfg=cfg,
        train_loader=loader,
        output_dir=tmp_path / "run-a",
        world_size=1,
        device=torch.device("cpu"),
        is_main=True,
        global_step=0,
        total_steps=lambda: 4,
    )


def test_dashboard_lifecycle_prints_final_frame_and_summary(tmp_path):
    console = Console(record=True, width=80, height=24, force_terminal=True, file=io.StringIO())
    dashboard = Dashboard(console, profile="tiny")
    trainer = fake_trainer(tmp_path)
    dashboard.on_train_start(trainer)
    for step in range(1, 5):
        ctx = SimpleNamespace(
            step=step,
            epoch=0,
            targets=[{}, {}],
            optimizer_stepped=True,
            timings={"data": 0.01, "forward": 0.1, "backward": 0.1, "optimizer": 0.02, "step": 0.25},
        )
        record = {
            "step": step,
            "loss": 10.0 / step,
            "loss_ce": 1.0,
            "loss_bbox": 0.5,
            "loss_giou": 0.4,
            "grad_norm": 5.0,
            "lr": 1e-4,
        }
        dashboard.on_step_end(trainer, ctx, record)
    dashboard.on_event(trainer, {"step": 4, "kind": "grad_norm_spike", "severity": "warning", "message": "spike"})
    dashboard.on_train_end(
        trainer,
        {
            "steps": 4,
            "elapsed_s": 1.0,
            "interrupted": False,
            "exit_code": 0,
            "checkpoint": str(tmp_path / "run-a" / "checkpoint.pth"),
        },
    )
    text = console.export_text()
    assert "step 4/4" in text and "2.500" in text and "run summary" in text and "finished 4 steps" in text
    assert "CPU" in text and "RAM" in text  # a real /proc reading on this machine
    dashboard.close()  # idempotent, as at exit


def test_cuda_step_timer_reads_finished_steps_without_waiting():
    class FakeEvent:
        clock = 0.0

        def __init__(self):
            self.at, self.done = None, True

        def record(self):
            FakeEvent.clock += 10.0
            self.at = FakeEvent.clock

        def query(self):
            return self.done

        def elapsed_time(self, end):
            return end.at - self.at  # milliseconds, like torch.cuda.Event

    results = []
    timer = CudaStepTimer(FakeEvent, lambda *seconds: results.append(seconds))
    for _ in range(2):
        timer.begin()
        timer.mark()  # after the loss
        timer.mark()  # after backward
        timer.end()
    timer._pending[-1][-1].done = False  # the GPU has not reached the second step's end yet
    timer.collect()
    assert results == [(0.01, 0.01, 0.01)]
    timer.begin()
    timer.end()  # only two marks: a step that cannot be split is dropped
    assert len(timer._pending) == 1


# ----------------------------------------------------------------------------- readers


def test_host_reader_from_proc_files(tmp_path):
    (tmp_path / "stat").write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")
    (tmp_path / "meminfo").write_text("MemTotal:       8000000 kB\nMemAvailable:   6000000 kB\n")
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "statm").write_text("1000 256 0 0 0 0 0\n")
    reader = HostReader(tmp_path, pid=42)
    (tmp_path / "stat").write_text("cpu  250 0 250 900 0 0 0 0 0 0\n")  # 300 busy of 400 jiffies since
    reading = reader.read()
    assert reading.cpu_percent == pytest.approx(75.0)
    assert reading.ram_total == 8000000 * 1024 and reading.ram_used == 2000000 * 1024
    assert reading.rss is not None and reading.rss > 0


def test_host_reader_without_proc_reports_nothing_but_does_not_fail(tmp_path):
    reading = HostReader(tmp_path / "missing", pid=1).read()
    assert reading.cpu_percent is None and reading.ram_total is None and reading.rss is None


def test_visible_devices_parsing():
    assert visible_gpu_selectors(None) is None
    assert visible_gpu_selectors("") == []
    assert visible_gpu_selectors("1,0") == ["1", "0"]
    assert visible_gpu_selectors("GPU-abc, 2,-1,3") == ["GPU-abc", "2"]


def test_nvml_reader_never_raises():
    reader = NvmlReader(None)  # on this machine: no driver, or a driver with GPUs
    readings = reader.read()
    assert reader.note or readings
