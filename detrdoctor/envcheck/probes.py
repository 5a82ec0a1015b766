"""Subprocess probes: import the risky packages somewhere a crash or a broken binary can't take the tool down.

The parent calls `start_probes`, which starts one `python -m detrdoctor.envcheck.probes NAME` per probe, all at
once. A probe reads its parameters as JSON on stdin and writes one JSON object per finished step on stdout, so
the steps done before a segfault still count. This module imports only the standard library at module level:
it runs both in the parent and in every child.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detr.data.layout import SplitSource

# Generous: a cold torch import on network storage, or a CUDA init on a large node, takes tens of seconds.
TIMEOUTS_S = {"torch": 180.0, "dataset": 600.0}
DEFAULT_TIMEOUT_S = 60.0
STDERR_TAIL_CHARS = 2000

Emit = Callable[[str, dict[str, Any]], None]


# ---------------------------------------------------------------- parent side


def start_probes(
    requests: dict[str, dict[str, Any]], commands: dict[str, list[str]] | None = None
) -> dict[str, Future[dict[str, Any]]]:
    """Start the named probes (name → parameters) and plain commands (name → argv) at once; name → future result."""
    jobs: dict[str, Callable[[], dict[str, Any]]] = {
        name: functools.partial(_run_probe, name, params) for name, params in requests.items()
    }
    for name, argv in (commands or {}).items():
        jobs[name] = functools.partial(_run_command, argv)
    pool = ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="envcheck-probe")
    futures = {name: pool.submit(job) for name, job in jobs.items()}
    pool.shutdown(wait=False)  # the workers finish these jobs; nothing else is queued
    return futures


def _run_probe(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """One probe in a fresh interpreter (the same one running detrdoctor); its steps merged into one dict."""
    argv = [sys.executable, "-m", "detrdoctor.envcheck.probes", name]
    timeout = TIMEOUTS_S.get(name, DEFAULT_TIMEOUT_S)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, input=json.dumps(params), capture_output=True, encoding="utf-8", errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        result = _parse_steps(_text(e.stdout))
        result["error"] = f"probe timed out after {timeout:.0f} s"
        result["stderr"] = _tail(_text(e.stderr))
        result["elapsed_s"] = round(time.perf_counter() - start, 3)
        return result
    result = _parse_steps(proc.stdout)
    result["elapsed_s"] = round(time.perf_counter() - start, 3)
    if proc.returncode != 0:
        result["error"] = _describe_exit(proc.returncode)
        result["stderr"] = _tail(proc.stderr)
    elif any(not step.get("ok") for step in result["steps"].values()):
        result["stderr"] = _tail(proc.stderr)
    return result


def _run_command(argv: list[str]) -> dict[str, Any]:
    """A non-Python helper (py-spy --version): its output, or why it didn't run."""
    try:
        proc = subprocess.run(argv, capture_output=True, encoding="utf-8", errors="replace", timeout=DEFAULT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}
    out = (proc.stdout + proc.stderr).strip()
    return {"ok": proc.returncode == 0, "output": out[:STDERR_TAIL_CHARS], "returncode": proc.returncode}


def _parse_steps(stdout: str) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for line in stdout.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "step" in record:
                steps[record.pop("step")] = record
    return {"steps": steps}


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"probe crashed with signal {-code} ({signal.Signals(-code).name})"
        return f"probe crashed with signal {-code}"
    return f"probe exited with status {code}"


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _tail(text: str) -> str:
    return text[-STDERR_TAIL_CHARS:].strip()


# ---------------------------------------------------------------- child side


@contextlib.contextmanager
def _step(emit: Emit, name: str) -> Iterator[dict[str, Any]]:
    """Collect one step's facts; an exception becomes the step's `error` (type, message, last frame) instead of a crash.

    A `started` record goes out first, so a step that kills the process is the one left with nothing else.
    """
    emit(name, {"started": True})
    record: dict[str, Any] = {}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield record
            record["ok"] = True
        except BaseException as e:  # noqa: BLE001 - a probe reports every failure, SystemExit from C code included
            record["ok"] = False
            record["error"] = _describe(e)
            record["traceback"] = "".join(traceback.format_exception(e)[-3:])[-STDERR_TAIL_CHARS:]
    if caught:
        record["warnings"] = [f"{w.category.__name__}: {w.message}" for w in caught][:20]
    record["elapsed_s"] = round(time.perf_counter() - start, 3)
    emit(name, record)


def _describe(error: BaseException) -> str:
    """The root cause first (torch wraps 'undefined symbol' in 'Could not load this library'), then what was raised."""
    root, seen = error, {id(error)}
    while (inner := root.__cause__ or root.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        root = inner
    text = f"{type(root).__name__}: {root}"
    return text if root is error else f"{text}\n(raised as {type(error).__name__}: {error})"


def probe_torch(params: dict[str, Any], emit: Emit) -> None:
    """torch's build, its NumPy bridge, CUDA devices, and torchvision's compiled ops (loaded directly)."""
    with _step(emit, "import") as r:
        import torch

        r["version"] = torch.__version__
        r["file"] = torch.__file__
        r["cuda"] = torch.version.cuda
        r["hip"] = getattr(torch.version, "hip", None)
        r["debug"] = bool(torch.version.debug)
    if "torch" not in sys.modules:
        return
    with _step(emit, "numpy") as r:
        import numpy

        r["numpy_version"] = numpy.__version__
        r["from_numpy"] = float(torch.from_numpy(numpy.arange(3.0)).sum().item())
        r["to_numpy"] = torch.arange(3).numpy().tolist()
    with _step(emit, "libs") as r:
        r["arch_list"] = torch.cuda.get_arch_list()
        r["cudnn_available"] = bool(torch.backends.cudnn.is_available())
        r["cudnn_version"] = torch.backends.cudnn.version() if r["cudnn_available"] else None
        r["nccl_version"] = None
        if torch.version.cuda or getattr(torch.version, "hip", None):
            with contextlib.suppress(Exception):
                import torch.cuda.nccl

                nccl = torch.cuda.nccl.version()
                r["nccl_version"] = ".".join(str(v) for v in nccl) if isinstance(nccl, tuple) else str(nccl)
    if params.get("device") != "cpu":
        with _step(emit, "cuda") as r:
            r["available"] = bool(torch.cuda.is_available())
            r["device_count"] = torch.cuda.device_count() if r["available"] else 0
            r["devices"] = []
            for i in range(r["device_count"]):
                major, minor = torch.cuda.get_device_capability(i)
                r["devices"].append({"index": i, "name": torch.cuda.get_device_name(i), "capability": [major, minor]})
            r["bf16"] = bool(torch.cuda.is_bf16_supported()) if r["available"] else None
        if r.get("available"):
            with _step(emit, "cuda_kernel") as r:
                # A kernel launch is what fails when the wheel lacks this GPU's architecture.
                r["sum"] = float(torch.ones(4, device="cuda").sum().item())
    with _step(emit, "torchvision_ops") as r:
        r.update(_torchvision_ops(torch))


def _torchvision_ops(torch: Any) -> dict[str, Any]:
    """Load torchvision's compiled library and run nms on it, without `import torchvision`.

    `import torchvision` pulls in torch._dynamo (about 2 s), while the library load is what fails when the
    binaries don't match this torch; the version pairing rule covers the Python side.
    """
    import importlib.util

    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'torchvision'")
    folder = list(spec.submodule_search_locations)[0]
    candidates = sorted(
        (f for f in os.listdir(folder) if f.startswith("_C") and f.endswith((".so", ".pyd"))),
        key=lambda f: (not f.startswith("_C_stable"), f),  # torchvision ≥ 0.2x ships _C_stable; older ones _C
    )
    if not candidates:
        raise FileNotFoundError(f"torchvision at {folder} has no compiled ops library (_C*.so)")
    library = os.path.join(folder, candidates[0])
    torch.ops.load_library(library)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    keep = torch.ops.torchvision.nms(boxes, scores, 0.5).tolist()
    if keep != [0, 2]:
        raise RuntimeError(f"torchvision nms returned {keep}, expected [0, 2]")
    return {"library": library, "nms_keep": keep, "cuda_version": int(torch.ops.torchvision._cuda_version())}


def probe_numeric(params: dict[str, Any], emit: Emit) -> None:
    """NumPy, then what is compiled against it: scipy's linear_sum_assignment and pycocotools' COCOeval.

    One process for the three saves a NumPy import and an interpreter; the steps stream out, so a crash in a
    later one keeps the earlier results.
    """
    with _step(emit, "numpy") as r:
        import numpy

        r["version"] = numpy.__version__
        r["file"] = numpy.__file__
        r["dot"] = float(numpy.dot(numpy.arange(3.0), numpy.arange(3.0)))
    with _step(emit, "scipy") as r:
        import scipy
        from scipy.optimize import linear_sum_assignment

        r["version"] = scipy.__version__
        _, cols = linear_sum_assignment([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]])
        r["assignment"] = [int(c) for c in cols]
        if r["assignment"] != [1, 0, 2]:
            raise RuntimeError(f"linear_sum_assignment returned {r['assignment']}, expected [1, 0, 2]")
    with _step(emit, "pycocotools") as r:
        import pycocotools
        import pycocotools._mask  # noqa: F401 - the compiled part, where NumPy ABI errors surface
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        r["file"] = pycocotools.__file__
    if "pycocotools.cocoeval" in sys.modules:
        with _step(emit, "cocoeval") as r:
            r["ap"] = _tiny_cocoeval(COCO, COCOeval)


def _tiny_cocoeval(coco_class: Any, cocoeval_class: Any) -> float:
    """AP of perfect detections on a one-image dataset: 1.0 unless the install is broken."""
    gt = coco_class()
    gt.dataset = {
        "images": [{"id": 1, "width": 64, "height": 64}],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 30, 16, 24], "area": 384, "iscrowd": 0},
        ],
    }
    gt.createIndex()
    detections = [
        {"image_id": 1, "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in gt.dataset["annotations"]
    ]
    evaluator = cocoeval_class(gt, gt.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return round(float(evaluator.stats[0]), 4)


def probe_nvml(params: dict[str, Any], emit: Emit) -> None:
    """The driver and the GPUs as NVML sees them, in PCI bus order (the order nvidia-smi prints)."""
    with _step(emit, "init") as r:
        import pynvml

        r["module_file"] = pynvml.__file__
        pynvml.nvmlInit()
        r["driver_version"] = _str(pynvml.nvmlSystemGetDriverVersion())
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        r["cuda_driver_version"] = f"{cuda // 1000}.{cuda % 1000 // 10}"
        r["devices"] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            device: dict[str, Any] = {"index": i, "name": _str(pynvml.nvmlDeviceGetName(handle))}
            with contextlib.suppress(pynvml.NVMLError):
                device["pci_bus_id"] = _str(pynvml.nvmlDeviceGetPciInfo(handle).busId)
            with contextlib.suppress(pynvml.NVMLError):
                device["capability"] = list(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
            with contextlib.suppress(pynvml.NVMLError):
                device["memory_gib"] = round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30, 1)
            r["devices"].append(device)
        pynvml.nvmlShutdown()


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def probe_dataset(params: dict[str, Any], emit: Emit) -> None:
    """A dataset folder: its layout, annotation files, referenced images, a decoded sample, and the doctor's checks.

    The split steps read each annotation file as training does (validated, normalised, indexed: a broken
    pycocotools shows here and in its own check); the layout and the doctor use the same code. It runs in a
    child so that parsing a 450 MB annotation file overlaps the other probes and its memory goes away with
    the process.
    """
    root = params["root"]
    with _step(emit, "root") as r:
        r["exists"] = not root or os.path.isdir(root)
        if root and os.path.isfile(root):
            from detr.data.layout import ARCHIVES

            r["archive"] = Path(root).suffix.lower() in ARCHIVES
    if not root or os.path.isdir(root):
        with _step(emit, "layout") as r:
            cfg = _dataset_config(params)
            r.update(_layout_facts(cfg))
        inspected = set()
        for split in r.get("splits", []):
            key = (split["annotations"], split.get("subset", ""))
            if key in inspected:  # a held-out share of the same file
                continue
            inspected.add(key)
            with _step(emit, f"split:{split['name']}") as s:
                s.update(_inspect_split(split, int(params.get("sample", 8)), cfg))
        if r.get("ok"):
            with _step(emit, "doctor") as d:
                from detrdoctor.datadoctor.doctor import diagnose_dataset

                d["checks"] = diagnose_dataset(cfg, int(params.get("doctor_sample", 32)))


def _dataset_config(params: dict[str, Any]) -> Any:
    """The RunConfig env-check judges the dataset with: the profile (default detr-r50) and the [data] flags."""
    from detrdoctor.runconfig import load_run_config

    profile, root = params.get("profile") or "detr-r50", params["root"] or None
    return load_run_config(profile, root, {"data": params.get("data") or {}})


def _layout_facts(cfg: Any) -> dict[str, Any]:
    from detr.data.layout import find_layout
    from detr.data.split import layout_line

    layout = find_layout(cfg.data)
    splits = [
        {
            "name": name,
            "images": str(source.images),
            "annotations": str(source.annotations),
            "part": source.part,
            "format": source.format,
            "subset": source.subset,
        }
        for name, source in (("train", layout.train), ("val", layout.val))
    ]
    return {"kind": layout.kind, "description": layout_line(layout), "splits": splits}


def _inspect_split(split: dict[str, str], sample: int, cfg: Any) -> dict[str, Any]:
    """One split's annotations as training reads them (`detr.data.annotations.load_annotations`: read by its
    format's reader, validated and normalised), its images present, and a decoded sample (each read time-boxed)."""
    from detr.data.annotations import load_annotations
    from detr.data.check import missing_images
    from detr.errors import DataError

    fmt = split.get("format", "coco")
    facts: dict[str, Any] = {
        "name": split["name"],
        "format": fmt,
        "images_dir": split["images"],
        "images_dir_exists": os.path.isdir(split["images"]),
        "annotations": split["annotations"],
        "annotations_exist": os.path.exists(split["annotations"]),
    }
    if not facts["annotations_exist"]:
        return facts
    try:
        parsed = load_annotations(_split_source(split, cfg))
    except DataError as e:
        facts["parse_error"] = str(e)
        facts["problems"] = _problems(split, cfg)
        return facts
    data = parsed.coco.dataset
    facts["counts"] = {k: len(data[k]) for k in ("images", "annotations", "categories")}
    facts["notes"] = list(parsed.notes)
    names = [str(img["file_name"]) for img in data["images"]]
    facts["images_without_file_name"] = 0  # validation requires every file name
    missing = missing_images(Path(split["images"]), names) if facts["images_dir_exists"] else names
    facts["missing_images"] = len(missing)
    facts["missing_first"] = missing[:5]
    absent = set(missing)
    present = [n for n in names if n not in absent]
    facts["decode"] = _decode_sample(split["images"], present, sample)
    return facts


def _split_source(split: dict[str, str], cfg: Any) -> SplitSource | Path:
    """What `load_annotations` reads for a split of `_layout_facts`: a COCO file by path, a native format's
    (YOLO, VOC, ...) split as the layout found it (its reader needs the format's details)."""
    from detr.data.layout import find_layout

    if split.get("format", "coco") == "coco":
        return Path(split["annotations"])
    return find_layout(cfg.data).split(split["name"])


def _problems(split: dict[str, str], cfg: Any) -> list[str]:
    """Every validation problem of a split's annotations that parse (one line each)."""
    from detr.data.formats import READERS
    from detr.data.validate import read_json, validate_coco
    from detr.errors import DataError

    try:
        source = _split_source(split, cfg)
        data = read_json(source) if isinstance(source, Path) else dict(READERS[source.format](source))
        return [p.line() for p in validate_coco(data, split["annotations"])]
    except DataError as e:
        return [str(e)]


def _decode_sample(folder: str, names: list[str], sample: int) -> dict[str, Any]:
    """Fully decode up to `sample` images spread evenly over the list (deterministic, so reruns agree); a file
    that does not answer within the read limit is a failure naming it, and ends the sample."""
    if not names or sample <= 0:
        return {"tried": 0, "failed": []}
    try:
        from PIL import Image
    except ImportError as e:
        return {"tried": 0, "failed": [], "error": f"{type(e).__name__}: {e}"}
    from detr.data.bounded import TimedOut, read_each

    def decode(name: str) -> None:
        with Image.open(os.path.join(folder, name)) as img:
            img.convert("RGB").load()

    step = max(1, len(names) // sample)
    picked = names[::step][:sample]
    failed = []
    tried = 0
    for name, result in read_each(picked, decode):
        tried += 1
        if isinstance(result, TimedOut):
            failed.append({"name": name, "error": f"did not answer in {result.seconds:g} s"})
        elif isinstance(result, BaseException):
            failed.append({"name": name, "error": f"{type(result).__name__}: {result}"})
    return {"tried": tried, "failed": failed}


PROBES: dict[str, Callable[[dict[str, Any], Emit], None]] = {
    "torch": probe_torch,
    "numeric": probe_numeric,
    "nvml": probe_nvml,
    "dataset": probe_dataset,
}


def main(argv: list[str]) -> None:
    """Child entry point: run one probe, one JSON line per step on the real stdout, then exit without teardown."""
    # Libraries print (pycocotools' summary, C-level messages): send fd 1 to stderr, keep a private copy for results.
    out = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(step: str, record: dict[str, Any]) -> None:
        out.write(json.dumps({"step": step, **record}, default=str) + "\n")
        out.flush()

    params = json.loads(sys.stdin.read() or "{}")
    PROBES[argv[0]](params, emit)
    sys.stderr.flush()
    # Tearing down an interpreter that imported torch takes about a second; the results are already written.
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
