"""`train` and `env-check` on messy exports: what would crash or hang stops in one line, before a run folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from exports import coco_export, edit_train, no_images, write_json
from typer.testing import CliRunner

from detrdoctor.cli import app

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
    assert not out.exists() and elapsed < 60  # the limit is 5 s; the rest is start-up on a loaded machine


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


def test_a_label_studio_json_is_asked_for_as_coco(tmp_path: Path) -> None:
    tasks = [{"id": 1, "data": {"image": "/data/upload/1/a.jpg"}, "annotations": [{"result": []}]}]
    write_json(tmp_path / "export" / "project.json", tasks)
    result = runner.invoke(app, ["env-check", "--data", str(tmp_path / "export"), "--profile", "tiny", "--json"])
    rows = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert result.exit_code == 1 and "export as COCO" in rows["dataset.layout"]["message"]
