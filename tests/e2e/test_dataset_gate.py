"""`train` and `env-check` on messy exports: what would crash or hang stops in one line, before a run folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from exports import coco_export, edit_train, no_images
from typer.testing import CliRunner

from detrdoctor.cli import app
from detrdoctor.profiles import PROFILE_DIR

runner = CliRunner()


def release(fifo: Path) -> None:
    """Let the abandoned reader of a named pipe finish (it then reads an empty file)."""
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_blocked_image_read_stops_train_naming_the_file(tmp_path: Path) -> None:
    root = coco_export(tmp_path / "export")
    stuck = root / "train2017" / "train2017_2.jpg"
    stuck.unlink()
    os.mkfifo(stuck)  # stands in for a file on a hung network mount: opening it never returns
    out = tmp_path / "run"
    started = time.monotonic()
    args = ["train", "--profile", "tiny", "--data", str(root), "--output-dir", str(out), "--no-dashboard"]
    result = runner.invoke(app, [*args, "--stall-after", "10", "--on-stall", "stop", "--max-steps", "1"])
    elapsed = time.monotonic() - started
    try:
        release(stuck)
    except OSError:
        pass  # the reader already gave up
    assert result.exit_code == 1, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "data.readable" in error[0] and f"{stuck} did not answer in 5 s" in error[0]
    # It ends (the hang it replaces never did): 5 s for the pipe, the rest is imports and the other checks.
    assert not out.exists() and elapsed < 240


def test_an_empty_images_list_is_not_ready_and_does_not_train(tmp_path: Path) -> None:
    root = coco_export(tmp_path / "export")
    path = edit_train(root, no_images)
    check = runner.invoke(app, ["env-check", "--data", str(root), "--profile", "tiny", "--device", "cpu", "--json"])
    rows = {c["id"]: c for c in json.loads(check.stdout)["checks"]}
    assert check.exit_code == 1 and rows["dataset.annotations"]["status"] == "fail"
    assert rows["dataset.annotations"]["message"].startswith(f"{path}: images = []: no images")
    out = tmp_path / "run"
    train = runner.invoke(app, ["train", "--profile", "tiny", "--coco-path", str(root), "--output-dir", str(out)])
    assert train.exit_code == 1 and "images = []: no images" in train.output and not out.exists()


def test_training_skips_images_over_num_queries_when_asked(tmp_path: Path) -> None:
    """The tiny profile has 10 queries; one training image holds 13 objects: the gate names it and both fixes,
    and with [data] skip_images_over_queries = true training runs on the other five."""

    def crowded(data: dict) -> None:
        data["annotations"] += [
            {"id": 100 + k, "image_id": 2, "category_id": 1, "bbox": [1 + k, 1, 2, 2], "iscrowd": 0, "area": 4}
            for k in range(11)
        ]

    root = coco_export(tmp_path / "export")
    edit_train(root, crowded)
    tiny = PROFILE_DIR / "tiny.toml"
    args = ["train", "--data", str(root), "--max-steps", "1", "--eval-every", "0", "--no-dashboard"]
    stopped = runner.invoke(app, [*args, "--profile", "tiny", "--output-dir", str(tmp_path / "stopped")])
    assert stopped.exit_code == 1 and "train2017_1.jpg (13)" in stopped.output
    assert "skip_images_over_queries = true" in stopped.output and "num_queries ≥ 13" in stopped.output
    profile = tmp_path / "skip.toml"
    profile.write_text(tiny.read_text().replace("[data]\n", "[data]\nskip_images_over_queries = true\n", 1))
    out = tmp_path / "run"
    result = runner.invoke(app, [*args, "--profile", str(profile), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    summary = next(r for r in records if r.get("kind") == "data_summary")
    assert (summary["images"], summary["skipped_images"]) == (5, 1)
    check = next(r for r in records if r.get("check") == "data.num_queries")
    assert check["severity"] == "warning" and "train2017_1.jpg (13)" in check["detail"]
    assert "skip_images_over_queries = true" in (out / "config.toml").read_text()
