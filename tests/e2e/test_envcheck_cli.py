"""env-check end to end: a real run on this machine, --from round trips, exit codes, bad input, the dataset probe."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from detrdoctor.cli import app
from detrdoctor.envcheck.collect import dataset_request
from detrdoctor.envcheck.probes import start_probes
from detrdoctor.envcheck.rules import judge

FIXTURE = Path(__file__).parents[1] / "fixtures" / "envcheck" / "gpu_node_ok.json"
CUDA_CHECKS = ("cuda.available", "cuda.driver", "cuda.arch", "cuda.bf16", "cuda.device_order")
# Runs the CLI and reports, at exit, whether the main process imported torch (it must leave that to the probes).
RUN_CLI = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write(f\"TORCH_IMPORTED={'torch' in sys.modules}\\n\"))\n"
    "from detrdoctor.cli import app\n"
    "app()\n"
)
runner = CliRunner()


def write_coco(
    root: Path, split: str, names: list[str], *, write: list[str] | None = None, corrupt: tuple[str, ...] = ()
) -> None:
    """A tiny COCO split: annotations name `names`; image files are written for `write` (default: all)."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for name in names if write is None else write:
        if name in corrupt:
            (root / split / name).write_bytes(b"\xff\xd8 not really a jpeg")
        else:
            Image.new("RGB", (32, 24), (200, 30, 30)).save(root / split / name)
    coco = {
        "images": [{"id": i + 1, "file_name": n, "width": 32, "height": 24} for i, n in enumerate(names)],
        "annotations": [
            {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0}
            for i in range(len(names))
        ],
        "categories": [{"id": 1, "name": "box"}],
    }
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> dict[str, Any]:
    """`detrdoctor env-check --json --coco-path <a good tiny dataset>` on this machine, in a fresh process."""
    root = tmp_path_factory.mktemp("coco")
    write_coco(root, "train2017", ["a.jpg", "b.jpg", "c.jpg"])
    write_coco(root, "val2017", ["d.jpg"])
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUN_CLI, "env-check", "--json", "--coco-path", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return {"proc": proc, "doc": json.loads(proc.stdout), "elapsed_s": time.perf_counter() - start, "root": root}


def test_real_run_passes_or_warns_sensibly(real_run):
    proc, doc = real_run["proc"], real_run["doc"]
    failed = [c for c in doc["checks"] if c["status"] == "fail"]
    assert failed == [] and proc.returncode == 0, failed
    statuses = {c["id"]: c["status"] for c in doc["checks"]}
    nvml = doc["facts"]["probes"]["nvml"]["steps"]["init"]
    if not (nvml.get("ok") and nvml.get("devices")):
        assert all(statuses[cid] == "skip" for cid in CUDA_CHECKS)
    for cid in (
        "python.version",
        "torch.version",
        "torchvision.pairs",
        "torchvision.ops",
        "numpy.abi",
        "pycocotools.cocoeval",
        "scipy.lsa",
        "dataset.layout",
        "dataset.annotations",
        "dataset.images",
        "dataset.decode",
    ):
        assert statuses[cid] == "pass", (cid, statuses[cid])


def test_real_run_never_imports_torch_in_the_main_process(real_run):
    assert "TORCH_IMPORTED=False" in real_run["proc"].stderr


def test_json_schema(real_run):
    doc = real_run["doc"]
    assert list(doc) == ["checks", "summary", "facts"]
    assert set(doc["summary"]) == {"pass", "warn", "fail", "skip", "total", "strict", "ok", "exit_code"}
    assert (
        doc["summary"]["total"]
        == len(doc["checks"])
        == sum(doc["summary"][s] for s in ("pass", "warn", "fail", "skip"))
    )
    for c in doc["checks"]:  # the dataset doctor's rows add how many and an example (and data_summary's counts)
        extra = ["count", "example"] if c["id"].startswith("data.") else []
        extra += ["counts"] if c["id"] == "data.dropped_boxes" else []
        assert list(c) == ["id", "status", "found", "expected", "fix", "message", *extra]
    assert len({c["id"] for c in doc["checks"]}) == len(doc["checks"])
    assert doc["facts"]["format"] == 1 and set(doc["facts"]["probes"]) == {"torch", "numeric", "nvml", "dataset"}


def test_from_round_trip_gives_the_same_checks(real_run, tmp_path):
    saved = tmp_path / "facts.json"
    saved.write_text(real_run["proc"].stdout)
    result = runner.invoke(app, ["env-check", "--from", str(saved), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["checks"] == real_run["doc"]["checks"]


def save(tmp_path: Path, facts: dict[str, Any]) -> str:
    path = tmp_path / "facts.json"
    path.write_text(json.dumps({"facts": facts}))
    return str(path)


def healthy() -> dict[str, Any]:
    return copy.deepcopy(json.loads(FIXTURE.read_text())["facts"])


def test_strict_exit_codes(tmp_path):
    facts = healthy()
    assert runner.invoke(app, ["env-check", "--from", save(tmp_path, facts)]).exit_code == 0
    facts["host"]["shm"] = {"total_bytes": 64 * 2**20, "free_bytes": 64 * 2**20}
    assert runner.invoke(app, ["env-check", "--from", save(tmp_path, facts)]).exit_code == 0
    assert runner.invoke(app, ["env-check", "--from", save(tmp_path, facts), "--strict"]).exit_code == 1
    facts["packages"]["torchvision"] = "0.28.0"
    facts["metadata"]["torchvision_requires_torch"] = "torch==2.13.0"
    assert runner.invoke(app, ["env-check", "--from", save(tmp_path, facts)]).exit_code == 1


def test_from_with_device_cuda_reasks_the_question(tmp_path):
    facts = healthy()
    facts["probes"]["nvml"]["steps"]["init"] = {
        "ok": False,
        "error": "NVMLError_LibraryNotFound: NVML Shared Library Not Found",
    }
    facts["probes"]["torch"]["steps"]["cuda"] = {"available": False, "device_count": 0, "devices": [], "ok": True}
    path = save(tmp_path, facts)
    assert runner.invoke(app, ["env-check", "--from", path]).exit_code == 0
    assert runner.invoke(app, ["env-check", "--from", path, "--device", "cuda"]).exit_code == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("{not json", "not JSON"),
        ('{"checks": []}', 'no "facts" object'),
        ('{"facts": {"format": 99}}', "newer than this detrdoctor"),
    ],
)
def test_bad_from_file_is_one_line(tmp_path, content, expected):
    path = tmp_path / "facts.json"
    if content is not None:
        path.write_text(content)
    result = runner.invoke(app, ["env-check", "--from", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --from") and expected in lines[0]


@pytest.mark.parametrize("args", [["--device", "tpu"], ["--num-workers", "-1"], ["--coco-path", "x"]])
def test_bad_options_are_one_line(tmp_path, args):
    result = runner.invoke(app, ["env-check", "--from", save(tmp_path, healthy()), *args])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_table_at_80_columns_shows_symbols_and_unbroken_fixes(tmp_path):
    facts = healthy()
    facts["packages"]["torch"] = "2.13.0"
    facts["probes"]["torch"]["steps"]["import"]["version"] = "2.13.0"
    facts["host"]["shm"] = {"total_bytes": 64 * 2**20, "free_bytes": 64 * 2**20}
    result = runner.invoke(app, ["env-check", "--from", save(tmp_path, facts)], env={"COLUMNS": "80"})
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any(line.startswith("✗ torchvision.pairs") for line in lines)
    assert any(line.startswith("! host.shm") for line in lines)
    assert "  fix: pip install torch==2.13.0 torchvision==0.28.0" in lines
    assert "  fix: docker run --shm-size=8g …  (or train with --num-workers 0)" in lines
    assert all(
        len(line) <= 80
        for line in lines
        if not line.startswith("  fix: ") and not line.startswith("detrdoctor env-check")
    )
    assert "✗ 1 fail" in lines[-1] and "exit 1" in lines[-1]


def test_modules_and_help_do_not_import_torch():
    code = (
        "import sys\n"
        "import detrdoctor.cli, detrdoctor.envcheck, detrdoctor.envcheck.collect, detrdoctor.envcheck.rules\n"
        "import detrdoctor.envcheck.render, detrdoctor.envcheck.probes, detrdoctor.verdict\n"
        "assert not {'torch', 'torchvision', 'numpy', 'pycocotools'} & set(sys.modules), 'heavy import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- the dataset probe on real files


def dataset_checks(root: Path, prefix: str = "dataset.") -> dict[str, dict[str, str]]:
    request = dataset_request({"coco_path": str(root), "profile": "tiny"})
    probe = start_probes({"dataset": request})["dataset"].result()
    facts = {"format": 1, "options": {"coco_path": request["root"]}, "probes": {"dataset": probe}}
    return {c["id"]: c for c in judge(facts) if c["id"].startswith(prefix)}


def test_broken_dataset(tmp_path):
    write_coco(
        tmp_path,
        "train2017",
        ["a.jpg", "b.jpg", "gone1.jpg", "gone2.jpg"],
        write=["a.jpg", "b.jpg"],
        corrupt=("b.jpg",),
    )
    checks = dataset_checks(tmp_path)
    # No val2017: the validation images are a held-out share of train2017's.
    assert checks["dataset.layout"]["status"] == "pass" and "held out" in checks["dataset.layout"]["found"]
    assert checks["dataset.annotations"]["status"] == "pass"
    images = checks["dataset.images"]
    assert images["status"] == "fail" and images["found"] == "train: 2 of 4 missing"
    assert "gone1.jpg, gone2.jpg" in images["message"]
    decode = checks["dataset.decode"]
    assert decode["status"] == "fail" and "b.jpg" in decode["message"]


def test_dataset_annotations_not_coco_and_missing_root(tmp_path):
    write_coco(tmp_path, "train2017", ["a.jpg"])
    write_coco(tmp_path, "val2017", ["b.jpg"])
    (tmp_path / "annotations" / "instances_val2017.json").write_text('{"images": []}')
    checks = dataset_checks(tmp_path)
    annotations = checks["dataset.annotations"]
    assert (
        annotations["status"] == "fail"
        and "annotations = None: not COCO: no list 'annotations'" in annotations["message"]
    )
    assert [line.split(": ")[1] for line in annotations["problems"]] == ["annotations = None", "categories = None"]
    missing = dataset_checks(tmp_path / "nowhere")
    assert list(missing) == ["dataset.layout"] and missing["dataset.layout"]["status"] == "fail"
