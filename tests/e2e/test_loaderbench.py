"""loader-bench: measurements on the tiny synthetic set, crash handling, the verdict rules and the JSON contract."""

from __future__ import annotations

import json
import os
import signal

import pytest
from typer.testing import CliRunner

from detrdoctor.cli import app
from detrdoctor.loaderbench import auto_worker_counts, parse_step_time, parse_worker_counts
from detrdoctor.loaderbench.render import Report, bar_chart, render
from detrdoctor.loaderbench.results import SettingResult
from detrdoctor.loaderbench.stages import split_stages
from detrdoctor.loaderbench.verdict import explain_crash, judge_starvation, recommend, step_wait

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

RESULT_KEYS = {
    "num_workers",
    "pin_memory",
    "images_per_s",
    "first_batch_s",
    "batches_per_s",
    "images_per_s_spread",
    "cpu_percent",
    "peak_rss_bytes",
    "stages_ms",
    "status",
    "error",
    "fix",
}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """The synthetic set goes to a temporary cache unless one is set already (never the user's home)."""
    previous = os.environ.get("DETRDOCTOR_CACHE")
    if previous is None:
        os.environ["DETRDOCTOR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["DETRDOCTOR_CACHE"]


@pytest.fixture
def tiny_cfg():
    from detrdoctor.profiles import load_profile

    return load_profile("tiny")


@pytest.fixture
def one_thread():
    """One intra-op thread while a model trains: on a busy shared CPU, more threads spin instead of computing."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_dataset():
    from detr.data import build_dataset
    from detrdoctor.profiles import load_profile

    cfg = load_profile("tiny")
    return cfg, build_dataset(cfg.data, "train", train=True, seed=0)


def bench_options(**overrides):
    from detrdoctor.loaderbench.measure import BenchOptions

    return BenchOptions(**{"batch_size": 2, "batches": 3, "train": True, **overrides})


class KillsItsWorker:
    """The tiny dataset, except that a worker of a 1-worker loader kills itself (as the OOM killer would)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is not None and info.num_workers == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.dataset[index]


# ----------------------------------------------------------------------------- measurements
def test_sweep_measures_0_1_and_2_workers(tiny_dataset):
    from detrdoctor.loaderbench.measure import run_sweep

    cfg, dataset = tiny_dataset
    results = run_sweep(dataset, cfg.data, bench_options(), [(0, False), (1, False), (2, False)])
    assert [(r.num_workers, r.status) for r in results] == [(0, "ok"), (1, "ok"), (2, "ok")]
    for r in results:
        assert r.images_per_s > 0 and r.batches_per_s > 0 and r.first_batch_s > 0
        assert r.images == 6 and r.timed_batches == 3 and len(r.images_per_s_windows) == 3
        assert r.images_per_s == pytest.approx(2 * r.batches_per_s)
        assert r.cpu_percent > 0 and r.peak_rss_main_bytes > 0 and r.pss_bytes > 0
        assert set(r.stages_ms) == {"read", "decode", "augment", "collate"}
        assert all(v is not None and v > 0 for v in r.stages_ms.values()), r.stages_ms
        assert r.corrupt_images == 0
    assert (
        results[0].peak_rss_workers_bytes == 0 < results[1].peak_rss_workers_bytes < results[2].peak_rss_workers_bytes
    )


def test_timing_off_gives_the_same_batches_without_stages(tiny_dataset):
    from detrdoctor.loaderbench.measure import run_sweep

    cfg, dataset = tiny_dataset
    (result,) = run_sweep(dataset, cfg.data, bench_options(stage_timing=False), [(1, False)])
    assert result.ok and result.images == 6 and result.stages_ms == {}


def test_worker_crash_is_that_settings_result_and_the_sweep_goes_on(tiny_dataset):
    from detrdoctor.loaderbench.measure import run_sweep

    cfg, dataset = tiny_dataset
    results = run_sweep(KillsItsWorker(dataset), cfg.data, bench_options(), [(0, False), (1, False), (2, False)])
    assert [r.status for r in results] == ["ok", "crashed", "ok"]
    crashed = results[1]
    assert "killed (SIGKILL)" in crashed.error
    assert "fewer workers" in crashed.fix
    assert crashed.images_per_s is None


def test_corrupt_image_is_counted_not_fatal(tiny_cfg, tmp_path):
    import shutil

    from detr.data import build_dataset, dataset_root
    from detrdoctor.loaderbench.measure import run_sweep

    root = tmp_path / "coco"
    shutil.copytree(dataset_root(tiny_cfg.data), root)
    tiny_cfg.data.coco_path = str(root)
    dataset = build_dataset(tiny_cfg.data, "train", train=False)
    dataset.image_path(0).write_bytes(b"not a jpeg")
    (result,) = run_sweep(dataset, tiny_cfg.data, bench_options(train=False, batches=8), [(0, False)])
    assert result.ok and result.corrupt_images >= 1


# ----------------------------------------------------------------------------- the rules, on hand-made numbers
def made(num_workers, images_per_s, pin="off", batch_size=8, **fields):
    return SettingResult(
        num_workers=num_workers,
        pin_memory=pin,
        images_per_s=images_per_s,
        batches_per_s=images_per_s / batch_size,
        images_per_s_spread=1.0,
        first_batch_s=0.1,
        **fields,
    )


def test_recommendation_is_the_fewest_workers_within_5_percent_of_the_best():
    results = [made(0, 100), made(1, 300), made(2, 390), made(4, 400), made(8, 405)]
    rec = recommend(results, judge_starvation(results, None, "none", "cpu"), cpu_count=8, has_gpu=False)
    assert (rec.num_workers, rec.pin_memory, rec.starved) == (2, "off", None)
    assert rec.best_num_workers == 8 and "within 5%" in rec.advice and "not judged" in rec.advice


def test_recommendation_prefers_a_setting_that_feeds_the_model():
    # A 0.02 s step takes 400 images/s: 8 workers keep up within noise (2.5% wait), 4 workers are within
    # 5% of them but leave the GPU waiting 7% of each step.
    results = [made(4, 372), made(8, 390)]
    rec = recommend(results, judge_starvation(results, 0.02, "given", "cuda:0"), cpu_count=8, has_gpu=True)
    assert rec.num_workers == 8 and rec.starved is False


def test_zero_workers_can_be_the_fastest_loader_and_still_starve_the_model():
    # Without workers nothing loads while the model computes: 400 images/s inline against a 400 images/s
    # model halves the step rate, while 4 workers at 390 images/s overlap and keep up.
    results = [made(0, 400), made(4, 390), made(8, 300)]
    rec = recommend(results, judge_starvation(results, 0.02, "given", "cuda:0"), cpu_count=8, has_gpu=True)
    assert (rec.num_workers, rec.starved) == (4, False)


def test_pin_memory_choice():
    on_slightly_slower = [made(2, 396, "on"), made(2, 400, "off")]
    st = judge_starvation(on_slightly_slower, None, "none", "cuda:0")
    assert recommend(on_slightly_slower, st, 8, has_gpu=True).pin_memory == "on"
    on_much_slower = [made(2, 300, "on"), made(2, 400, "off")]
    st = judge_starvation(on_much_slower, None, "none", "cuda:0")
    assert recommend(on_much_slower, st, 8, has_gpu=True).pin_memory == "off"


def test_starved_best_setting_names_what_to_do():
    stages = {"read": 0.1, "decode": 6.0, "augment": 2.0, "collate": 0.3}
    results = [made(0, 40), made(4, 160, stages_ms=stages), made(8, 200, stages_ms=stages)]
    st = judge_starvation(results, 0.02, "measured", "cuda:0")  # the model takes 400 images/s
    rec = recommend(results, st, cpu_count=8, has_gpu=True)
    assert rec.starved is True and rec.num_workers == 8
    assert "more CPU cores" in rec.advice and "decode on the GPU" in rec.advice
    # The sweep stopped below the CPU count while still gaining: more workers first.
    rec = recommend(results, st, cpu_count=32, has_gpu=True)
    assert "--num-workers up to 32" in rec.advice


def test_every_setting_crashed():
    results = [SettingResult(2, "off", status="crashed", error="a worker was killed", fix="use fewer workers")]
    rec = recommend(results, judge_starvation(results, 0.1, "given", "cpu"), cpu_count=2, has_gpu=False)
    assert rec.num_workers is None and "a worker was killed" in rec.advice


def test_starvation_on_hand_made_rates():
    assert step_wait(0.2, 0.1, num_workers=2) == pytest.approx((0.1, 0.5))  # loader half as fast: waits half
    assert step_wait(0.05, 0.1, num_workers=2) == (0.0, 0.0)  # workers keep ahead
    assert step_wait(0.05, 0.1, num_workers=0) == pytest.approx((0.05, 1 / 3))  # no overlap without workers
    results = [made(0, 80), made(2, 40), made(4, 160), SettingResult(8, "off", status="crashed")]
    st = judge_starvation(results, 0.1, "given", "cuda:0")  # 10 steps/s = 80 images/s at batch 8
    assert [s.starved for s in st.per_setting] == [True, True, False, None]
    assert st.per_setting[1].wait_fraction == pytest.approx(0.5)
    assert all(s.starved is None for s in judge_starvation(results, None, "none", None).per_setting)


@pytest.mark.parametrize(
    "message, reason, fix",
    [
        ("RuntimeError: DataLoader worker (pid 42) is killed by signal: Killed. ", "killed", "fewer workers"),
        (
            "RuntimeError: DataLoader worker (pid 42) is killed by signal: Bus error. It is possible that dataloader's "
            "workers are out of shared memory. Please try to raise your shared memory limit.",
            "shared memory",
            "shm-size",
        ),
        ("RuntimeError: DataLoader worker (pid(s) 42) exited unexpectedly", "exited unexpectedly", "dmesg"),
        (
            "RuntimeError: DataLoader worker (pid(s) 42) exited unexpectedly (worker signals: SIGKILL)",
            "out-of-memory",
            "fewer workers",
        ),
        (
            "RuntimeError: DataLoader worker (pid(s) 42) exited unexpectedly (worker signals: SIGSEGV)",
            "SIGSEGV",
            "--num-workers 0",
        ),
        (
            "ValueError: Caught ValueError in DataLoader worker process 0.\n"
            "Original Traceback (most recent call last):\n  File x\nValueError: bad box",
            "ValueError: bad box",
            "--num-workers 0",
        ),
    ],
)
def test_crash_explanations(message, reason, fix):
    got_reason, got_fix = explain_crash(message, shm_bytes=64 * 2**20)
    assert reason in got_reason and fix in got_fix


def test_stage_split():
    marks = {"decode_start": 1.5, "augment_start": 3.0}
    assert split_stages(1.0, 5.0, marks) == {"read": 0.5, "decode": 1.5, "augment": 2.0}
    assert split_stages(1.0, 5.0, {}) == {"read": None, "decode": 4.0, "augment": None}


def test_window_rates_and_worker_sweeps():
    from detrdoctor.loaderbench.measure import window_rates

    assert window_rates([0.0, 1.0, 2.0, 4.0], [8, 8, 8], 3) == [(8.0, 1.0), (8.0, 1.0), (4.0, 0.5)]
    assert auto_worker_counts(1) == [0, 1]
    assert auto_worker_counts(2) == [0, 1, 2]
    assert auto_worker_counts(12) == [0, 1, 2, 4, 8, 12]
    assert auto_worker_counts(16) == [0, 1, 2, 4, 8, 16]
    assert parse_worker_counts(" 4,0,2,2 ", 8) == [0, 2, 4]
    assert parse_step_time("0.25") == 0.25 and parse_step_time("none") is None and parse_step_time("AUTO") == "auto"


# ----------------------------------------------------------------------------- the command and its JSON
def test_json_schema_is_stable(one_thread):
    result = CliRunner().invoke(
        app,
        [
            "loader-bench",
            "--profile",
            "tiny",
            "--num-workers",
            "0,1",
            "--batches",
            "3",
            "--step-time",
            "auto",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"setup", "results", "recommendation", "starvation", "notes"} <= set(report)
    assert [r["num_workers"] for r in report["results"]] == [0, 1]
    for r in report["results"]:
        assert RESULT_KEYS <= set(r) and r["status"] == "ok"
        assert set(r["stages_ms"]) == {"read", "decode", "augment", "collate"}
    assert {"num_workers", "pin_memory", "starved", "advice"} <= set(report["recommendation"])
    assert report["recommendation"]["num_workers"] in (0, 1)
    starvation = report["starvation"]
    assert starvation["step_time_s"] > 0 and starvation["step_time_source"] == "measured"
    assert [s["num_workers"] for s in starvation["per_setting"]] == [0, 1]
    assert {"starved", "wait_fraction", "loader_batch_s"} <= set(starvation["per_setting"][0])


def test_text_report_renders_table_chart_and_recommendation():
    from rich.console import Console

    results = [
        made(0, 40, stages_ms={"read": 0.1, "decode": 1.0, "augment": 2.0, "collate": 0.2}),
        made(2, 160),
        SettingResult(4, "off", status="crashed", error="a worker was killed", fix="fewer"),
    ]
    st = judge_starvation(results, 0.1, "given", "cpu")
    setup = {
        "dataset": "synthetic",
        "split": "train",
        "images": 16,
        "batch_size": 8,
        "timed_batches": 30,
        "budget_s": 10.0,
        "cpu_count": 4,
        "gpu": None,
    }
    report = Report(setup, results, st, recommend(results, st, 4, has_gpu=False), notes=["a note"])
    console = Console(record=True, width=100)
    render(report, console)
    text = console.export_text()
    for expected in (
        "DataLoader throughput",
        "Cost per image",
        "160.0 images/s",
        "crashed",
        "recommendation",
        "Use --num-workers 2",
        "the model consumes 80.0 images/s",
        "note: a note",
    ):
        assert expected in text
    assert bar_chart(report).plain.count("█") > 0


@pytest.mark.parametrize("workers", ["-1", "two", "1.5", "0,,2", ""])
def test_bad_worker_lists_exit_2_with_one_line(workers):
    result = CliRunner().invoke(app, ["loader-bench", "--profile", "tiny", "--num-workers", workers])
    assert result.exit_code == 2, result.output
    assert "--num-workers" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--step-time", "-1"], "--step-time"),
        (["--pin-memory", "maybe"], "--pin-memory"),
        (["--batches", "2"], "--batches"),
        (["--split", "test"], "--split"),
    ],
)
def test_bad_flags_exit_2(args, message):
    result = CliRunner().invoke(app, ["loader-bench", "--profile", "tiny", *args])
    assert result.exit_code == 2 and message in result.output
