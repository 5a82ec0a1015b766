"""memprofile's sweep machinery on the CPU: out-of-memory points, isolation, the --find-max search."""

from __future__ import annotations

import json

import memprofile_models as models
import pytest

from detrdoctor.commands.memprofile import MemprofileOptions, run_memprofile
from detrdoctor.memprofile.measure import measure_point
from detrdoctor.memprofile.request import request_for
from detrdoctor.memprofile.search import LIMIT, find_max
from detrdoctor.profiles import load_profile

SHAPE = f"{models.SIDE}x{models.SIDE}"


def options(**overrides) -> MemprofileOptions:
    base = dict(
        profile="tiny",
        batch_sizes="1,2,4",
        amp="off",
        shape=SHAPE,
        find_max=False,
        device="cpu",
        estimate=False,
        gpu_memory=None,
        snapshot=False,
        json_output=True,
        output_dir=None,
        coco_path=None,
        in_process=True,
        safety_margin=0.1,
        build="memprofile_models:build_oom_mlp",
    )
    return MemprofileOptions(**{**base, **overrides})


def run_json(capsys, **overrides) -> dict:
    assert run_memprofile(options(**overrides)) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("in_process", [True, False], ids=["in-process", "subprocess"])
def test_an_allocation_failure_is_a_result_and_the_sweep_goes_on(capsys, in_process):
    sizes = "1,2,4" if in_process else "2,4"  # a process per point: keep it to two
    doc = run_json(capsys, batch_sizes=sizes, in_process=in_process)
    status = {r["batch_size"]: r["status"] for r in doc["results"]}
    assert status == {b: "ok" if b <= models.FAIL_ABOVE else "oom" for b in map(int, sizes.split(","))}
    oom = next(r for r in doc["results"] if r["status"] == "oom")
    assert "out of memory" in oom["error"] and oom["peak_bytes"] is None
    ok = next(r for r in doc["results"] if r["status"] == "ok")
    assert ok["mode"] == "measured" and ok["peak_bytes"] > 0 and ok["step_time_s"] > 0
    if not in_process:
        assert ok["device_bytes"] > ok["peak_bytes"]  # the measuring process's own peak RSS


def test_a_point_measured_alone_and_inside_a_sweep_agree(capsys):
    doc = run_json(capsys, batch_sizes="1,2,4")
    in_sweep = next(r for r in doc["results"] if r["batch_size"] == 2)
    cfg = load_profile("tiny")
    alone = measure_point(
        request_for(
            cfg,
            batch_size=2,
            amp="off",
            shape=(models.SIDE, models.SIDE),
            device="cpu",
            build="memprofile_models:build_oom_mlp",
        )
    )
    assert alone.peak_bytes == in_sweep["peak_bytes"]


def test_find_max_doubles_then_bisects():
    search = find_max(lambda b: b <= 37)
    assert search.best == 37 and search.trials == [1, 2, 4, 8, 16, 32, 64, 48, 40, 36, 38, 37]
    # Sweep results are reused, never retried.
    search = find_max(lambda b: b <= 37, known={1: True, 2: True, 4: True, 8: True})
    assert search.best == 37 and search.trials == [16, 32, 64, 48, 40, 36, 38, 37]
    assert find_max(lambda b: b <= 9, known={8: True, 12: False}).trials == [10, 9]
    assert find_max(lambda b: False).best is None
    assert find_max(lambda b: True).best == LIMIT


def test_find_max_runs_the_search_and_counts_oom_as_not_fitting(capsys):
    doc = run_json(capsys, device="auto", batch_sizes="1", find_max=True, gpu_memory="80GiB")
    assert doc["max_batch_size"] == {"off": models.FAIL_ABOVE} and doc["max_batch_size_source"] == {"off": "search"}
    assert doc["search_trials"] == {"off": [2, 4, 3]}
    searched = {r["batch_size"]: r for r in doc["results"] if r["source"] == "search"}
    assert searched[2]["fits"] is True and searched[3]["status"] == searched[4]["status"] == "oom"
    assert searched[4]["fits"] is False and all(r["mode"] == "estimated" for r in doc["results"])
