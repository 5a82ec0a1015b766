"""`detrdoctor memprofile` from the command line: the JSON contract, the CSV, and bad input."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from detrdoctor.cli import app

runner = CliRunner()
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")

RESULT_TYPES = {
    "batch_size": int,
    "amp": str,
    "status": str,
    "mode": str,
    "peak_bytes": int,
    "reserved_bytes": int,
    "device_bytes": int,
    "step_time_s": type(None),
    "images_per_s": type(None),
    "breakdown": dict,
}


@no_gpu
def test_json_schema_of_an_estimate(tmp_path):
    result = runner.invoke(
        app,
        [
            "memprofile",
            "--profile",
            "tiny",
            "--batch-sizes",
            "1,2",
            "--amp",
            "off",
            "--json",
            "--output-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    for key in ("results", "max_batch_size", "shape", "device", "fits_on", "amp_savings", "estimate_errors"):
        assert key in doc, key
    assert doc["shape"] == [96, 96] and doc["shape_source"] == "worst" and doc["device"]["type"] == "none"
    assert [(r["batch_size"], r["amp"]) for r in doc["results"]] == [(1, "off"), (2, "off")]
    for r in doc["results"]:
        for key, kind in RESULT_TYPES.items():
            assert isinstance(r[key], kind), (key, r[key])
        assert r["amp"] in ("off", "bf16", "fp16") and r["status"] == "ok" and r["mode"] == "estimated"
        assert set(r["breakdown"]) >= {"parameters", "gradients", "optimizer_state", "activations"}
    assert doc["max_batch_size"] == {}  # no device to fit into without --gpu-memory
    assert set(doc["fits_on"]["A100-80GB"]) == {"off"}
    with (tmp_path / "memprofile.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["batch_size"] for row in rows] == ["1", "2"] and rows[0]["mode"] == "estimated"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-sizes", "0"], "positive integers"),
        (["--batch-sizes", "2.5"], "positive integers"),
        (["--batch-sizes", "1,,2"], "positive integers"),
        (["--batch-sizes=-4"], "positive integers"),
        (["--amp", "fp8"], "--amp must be"),
        (["--amp", "fp16", "--device", "cpu"], "--amp fp16"),
        (["--shape", "800by1333"], "--shape"),
        (["--gpu-memory", "TitanZ"], "unknown GPU 'TitanZ' (known: V100-16GB"),
        (["--device", "tpu"], "--device"),
        (["--safety-margin", "1.5"], "--safety-margin"),
        (["--profile", "no-such-profile"], "unknown profile"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = runner.invoke(app, ["memprofile", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@no_gpu
@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cuda"], "no CUDA GPU"),
        (["--amp", "fp16"], "--gpu-memory"),
        (["--find-max"], "--gpu-memory"),
        (["--snapshot", "--output-dir", "x"], "needs a GPU"),
    ],
)
def test_gpu_only_requests_without_a_gpu_exit_2(args, message):
    result = runner.invoke(app, ["memprofile", *args])
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_cpu_measurement_says_whether_the_cpu_runs_bf16(tmp_path):
    from detr.engine.device import cpu_bf16_features

    args = ["memprofile", "--profile", "tiny", "--device", "cpu", "--batch-sizes", "1", "--amp", "bf16", "--json"]
    result = runner.invoke(app, [*args, "--output-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["device"]["type"] == "cpu" and doc["device"]["bf16"] == cpu_bf16_features()
    bf16_notes = [n for n in doc["notes"] if "bf16" in n]
    assert len(bf16_notes) == 1
    assert ("runs natively" in bf16_notes[0]) == bool(cpu_bf16_features())
