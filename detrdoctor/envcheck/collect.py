"""Collect the facts: a plain JSON-able dict that the rules judge, here or on another machine (`--from`).

Nothing here imports torch, torchvision, numpy or pycocotools: their facts come from subprocess probes, and
package versions come from installed metadata.
"""

from __future__ import annotations

import datetime
import importlib.metadata as metadata
import os
import platform
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Any

from detr.engine.device import cpu_bf16_features
from detrdoctor.envcheck.probes import start_probes
from detrdoctor.pyspy import find_pyspy, ptrace_scope

FACTS_FORMAT = 1

# Distributions whose versions the rules read; `pynvml` is the deprecated one that fights nvidia-ml-py.
PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pycocotools",
    "scipy",
    "typer",
    "rich",
    "nvidia-ml-py",
    "pynvml",
    "py-spy",
    "pillow",
    "detrdoctor",
)
CAP_SYS_PTRACE_BIT = 19


def collect(device: str, num_workers: int | None, dataset: dict[str, Any] | None) -> dict[str, Any]:
    """Everything the rules need; the probes run in parallel while this process reads the cheap facts.

    `dataset` ({"coco_path", "profile", "data": {[data] keys}}) asks for the dataset probe and its doctor.
    """
    start = time.perf_counter()
    py_spy = find_pyspy()
    commands = {"py-spy": [py_spy, "--version"]} if py_spy else {}
    # The torch probe is the critical path: it starts before anything else is done here.
    futures = start_probes({"torch": {"device": device}, "numeric": {}, "nvml": {}}, commands)
    request = dataset_request(dataset) if dataset else None
    if request:
        futures.update(start_probes({"dataset": request}))
    facts: dict[str, Any] = {
        "format": FACTS_FORMAT,
        "detrdoctor_version": _version("detrdoctor"),
        "collected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "options": {
            "device": device,
            "num_workers": num_workers,
            "coco_path": request["root"] if request else None,
            "profile": request["profile"] if request else None,
        },
        "python": python_facts(),
        "packages": {name: _version(name) for name in PACKAGES},
        "metadata": metadata_facts(),
        "requirements": requirement_facts(),
        "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")},
        "host": host_facts(),
        "py_spy": {"path": py_spy},
    }
    probes = {name: future.result() for name, future in futures.items()}
    if "py-spy" in probes:
        facts["py_spy"]["run"] = probes.pop("py-spy")
    facts["probes"] = probes
    facts["elapsed_s"] = round(time.perf_counter() - start, 3)
    return facts


def python_facts() -> dict[str, Any]:
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": sys.platform,
        "machine": platform.machine(),
    }


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def metadata_facts() -> dict[str, Any]:
    """What installed metadata says without importing: torchvision's torch pin, whether `pynvml` ships pynvml.py."""
    facts: dict[str, Any] = {"torchvision_requires_torch": None, "pynvml_ships_module": None}
    try:
        facts["torchvision_requires_torch"] = next(
            (
                r
                for r in metadata.requires("torchvision") or []
                if re.match(r"torch\b(?![-_\w])", r) and "extra" not in r
            ),
            None,
        )
    except metadata.PackageNotFoundError:
        pass
    try:
        files = metadata.files("pynvml")
        # pynvml ≥ 12 is an empty shim that depends on nvidia-ml-py; older ones ship their own pynvml.py.
        facts["pynvml_ships_module"] = None if files is None else any(str(f) == "pynvml.py" for f in files)
    except metadata.PackageNotFoundError:
        pass
    return facts


def requirement_facts() -> dict[str, str]:
    """detrdoctor's own minimums (from its installed metadata: pyproject is the single source)."""
    try:
        dist = metadata.distribution("detrdoctor")
    except metadata.PackageNotFoundError:
        return {}
    found = {"python": dist.metadata.get("Requires-Python") or ""}  # type: ignore[attr-defined]  # an email Message
    for line in dist.requires or []:
        match = re.match(r"^([A-Za-z0-9_.\-]+)\s*\(?\s*(>=\s*[\w.]+)", line)
        if match and ";" not in line:
            found[match.group(1).lower()] = match.group(2).replace(" ", "")
    return found


def host_facts() -> dict[str, Any]:
    """The limits that DataLoader workers and the profiler run into."""
    return {
        "in_container": any(os.path.exists(p) for p in ("/.dockerenv", "/run/.containerenv")),
        "shm": _shm(),
        "nofile": _nofile(),
        "cpus": _cpus(),
        "disk": _disk(Path.cwd() / "runs"),
        "ptrace_scope": ptrace_scope(),
        "cap_sys_ptrace": _cap_sys_ptrace(),
    }


def _shm() -> dict[str, int] | None:
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):  # no /dev/shm (macOS), no statvfs (Windows)
        return None
    return {"total_bytes": st.f_blocks * st.f_frsize, "free_bytes": st.f_bavail * st.f_frsize}


def _nofile() -> dict[str, int | str] | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "soft": "unlimited" if soft == resource.RLIM_INFINITY else soft,
        "hard": "unlimited" if hard == resource.RLIM_INFINITY else hard,
    }


def _cpus() -> dict[str, Any]:
    """CPUs this process may use: the affinity mask, and the cgroup quota that containers set without touching it."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "affinity": affinity,
        "count": os.cpu_count(),
        "cgroup_quota": _cgroup_quota(),
        "bf16": cpu_bf16_features(),
    }


def _cgroup_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]  # cgroup v2
        return None if quota == "max" else round(int(quota) / int(period), 2)
    except (OSError, ValueError):
        pass
    quota_us = _read_int("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # cgroup v1
    period_us = _read_int("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota_us and quota_us > 0 and period_us:
        return round(quota_us / period_us, 2)
    return None


def _disk(folder: Path) -> dict[str, Any]:
    """Free space where runs are written (its nearest existing parent, since runs/ may not exist yet)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    usage = shutil.disk_usage(existing)
    return {"path": str(folder), "measured_at": str(existing), "free_bytes": usage.free, "total_bytes": usage.total}


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _cap_sys_ptrace() -> bool | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE_BIT & 1)
    except (OSError, ValueError):
        return None
    return None


def dataset_request(dataset: dict[str, Any]) -> dict[str, Any]:
    """The dataset probe's parameters: the folder, and the profile and [data] flags that locate and judge it.

    The child finds the layout (detr.data.layout) and runs the dataset doctor: both import torch.
    """
    coco_path = dataset.get("coco_path")
    root = str(Path(coco_path).expanduser().resolve()) if coco_path else ""
    return {
        "root": root,
        "profile": dataset.get("profile"),
        "data": dataset.get("data") or {},
        "sample": 8,
        "doctor_sample": 32,
    }


def load_facts(path: str) -> dict[str, Any]:
    """The facts of a previous `env-check --json` output (or a bare facts object), for `--from`."""
    import json

    from detr.errors import ConfigError

    file = Path(path).expanduser()
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--from {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--from {path}: can't read it ({e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--from {path}: not JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    facts = document.get("facts") if isinstance(document, dict) and "facts" in document else document
    if not isinstance(facts, dict) or "format" not in facts:
        raise ConfigError(f'--from {path}: no "facts" object; expected the output of `detrdoctor env-check --json`')
    if not isinstance(facts["format"], int) or facts["format"] > FACTS_FORMAT:
        raise ConfigError(
            f"--from {path}: facts format {facts['format']!r} is newer than this detrdoctor reads ({FACTS_FORMAT})"
        )
    return facts
