"""Judge the facts: pure functions from the facts dict to checks, so every rule is testable with a hand-made dict.

Each check is a `detrdoctor.verdict.Check` (id, status, found, expected, fix, message). Rules read the facts
with defaults throughout: a partial or older facts file gives `skip`s, not crashes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from detr.config import DataConfig
from detrdoctor.fmt import byte_size
from detrdoctor.verdict import Check

Facts = dict[str, Any]

# The oldest driver for each CUDA major (minor-version compatibility covers the rest of the major).
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
# PyTorch's wheel indexes, oldest first; the fixes pick from these.
WHEEL_CUDA_TAGS = ("cu118", "cu121", "cu124", "cu126", "cu128", "cu129", "cu130")
WHEEL_INDEX = "https://download.pytorch.org/whl/"
SHM_MIN_BYTES = 2**30
NOFILE_MIN = 4096
DISK_MIN_BYTES = 2 * 2**30


# ---------------------------------------------------------------- versions


def release(version: str | None) -> tuple[int, ...]:
    """The numeric release part: '2.14.1+cu130' → (2, 14, 1); '2.5.0a0' → (2, 5, 0)."""
    numbers = []
    for part in (version or "").split("+")[0].split("."):
        match = re.match(r"\d+", part)
        if not match:
            break
        numbers.append(int(match.group()))
        if match.group() != part:
            break
    return tuple(numbers)


def meets(version: str | None, spec: str | None) -> bool:
    """Whether `version` satisfies a '>=X' minimum (an empty spec always holds)."""
    if not spec:
        return True
    minimum = spec.removeprefix(">=")
    have, need = release(version), release(minimum)
    return bool(have) and have + (0,) * (len(need) - len(have)) >= need


def torchvision_for_torch(torch_version: str) -> str | None:
    """The release rule: torch 2.N.p ↔ torchvision 0.(N+15).p, torch 1.N.p ↔ torchvision 0.(N+1).p."""
    v = release(torch_version) + (0, 0)
    if v[0] == 2:
        return f"0.{v[1] + 15}.{v[2]}"
    if v[0] == 1:
        return f"0.{v[1] + 1}.{v[2]}"
    return None


def torch_for_torchvision(tv_version: str) -> str | None:
    """The inverse of `torchvision_for_torch`."""
    v = release(tv_version) + (0, 0)
    if v[0] != 0 or v[1] < 2:
        return None
    return f"2.{v[1] - 15}.{v[2]}" if v[1] >= 15 else f"1.{v[1] - 1}.{v[2]}"


def minor_of(version: str | None) -> str:
    return ".".join(str(n) for n in release(version)[:2])


def exact_pin(requirement: str | None) -> str | None:
    """'torch (==2.5.1)' or 'torch==2.5.1' → '2.5.1'; ranges give None."""
    match = re.search(r"==\s*([\w.+]+)", requirement or "")
    return match.group(1) if match and "*" not in match.group(1) else None


def local_tag(version: str | None) -> str | None:
    """'2.5.1+cu124' → 'cu124'."""
    return version.split("+", 1)[1] if version and "+" in version else None


def index_flag(tag: str | None) -> str:
    """The `--index-url` for a PyTorch build tag (cu124, cpu, rocm6.2), or nothing for PyPI's default build."""
    return f" --index-url {WHEEL_INDEX}{tag}" if tag else ""


def cuda_tag(cuda: str | None) -> str | None:
    """'12.4' → 'cu124'."""
    v = release(cuda)
    return f"cu{v[0]}{v[1]}" if len(v) >= 2 else None


def newest_tag_for_driver(driver_cuda: str | None, at_least: tuple[int, int] = (0, 0)) -> str:
    """The newest wheel tag the driver runs that is at least `at_least`.

    Minor-version compatibility: a driver for CUDA M.x runs every M.y build, so only the major limits.
    """
    ceiling = (release(driver_cuda) or (99,))[0]
    candidates = [t for t in WHEEL_CUDA_TAGS if _tag_cuda(t) >= at_least]
    fitting = [t for t in candidates if _tag_cuda(t)[0] <= ceiling]
    return (fitting or candidates or list(WHEEL_CUDA_TAGS))[-1]


def _tag_cuda(tag: str) -> tuple[int, int]:
    digits = tag.removeprefix("cu")
    return int(digits[:-1]), int(digits[-1])


def cudnn_string(version: int | None) -> str:
    """cuDNN's integer: 9.x encodes M*10000+m*100+p, 8.x and older M*1000+m*100+p."""
    if not version:
        return ""
    if version >= 10000:
        return f"{version // 10000}.{version % 10000 // 100}.{version % 100}"
    return f"{version // 1000}.{version % 1000 // 100}.{version % 100}"


# ---------------------------------------------------------------- error texts


class Cause(NamedTuple):
    """What a known error text means."""

    key: str
    explanation: str


KNOWN_ERRORS: tuple[tuple[str, str, str], ...] = (
    (
        r"operator torchvision::\w+ does not exist",
        "torchvision_abi",
        "torchvision's compiled ops don't match this torch (built for another version)",
    ),
    (
        r"torchvision.*undefined symbol|undefined symbol.*torchvision",
        "torchvision_abi",
        "torchvision's compiled ops don't match this torch (built for another version)",
    ),
    (
        r"numpy\.dtype size changed",
        "numpy_abi_newer",
        "it was compiled against a different NumPy than the one installed (numpy.dtype size changed)",
    ),
    (
        r"_ARRAY_API not found|compiled using NumPy 1\.x cannot be run in\s+NumPy 2|Numpy is not available"
        r"|Failed to initialize NumPy",
        "numpy_abi_older",
        "it was compiled against NumPy 1.x and NumPy 2.x is installed",
    ),
    (
        r"module 'numpy' has no attribute '(float|int|bool|object|complex)'",
        "numpy_alias",
        "it uses np.float and friends, removed in NumPy 1.24 (an old pycocotools, e.g. from the cocoapi git master)",
    ),
    (
        r"sm_\d+a? is not compatible with the current PyTorch installation|no kernel image is available",
        "arch",
        "this torch has no kernels for the GPU's architecture",
    ),
    (
        r"CUDA driver version is insufficient|driver version is insufficient",
        "driver_old",
        "the NVIDIA driver is older than this torch's CUDA needs",
    ),
    (
        r"NVML Shared Library Not Found|libnvidia-ml\.so",
        "no_driver",
        "no NVIDIA driver is installed (libnvidia-ml.so is missing)",
    ),
    (
        r"lib(cudart|cublas\w*|cudnn\w*|nccl|nvrtc|cusparse\w*|cufft|curand|nvJitLink)[\w.]*\.so[\w.]*"
        r": cannot open shared object",
        "cuda_libs",
        "a CUDA library that torch links against is missing (a broken or mixed torch install)",
    ),
    (
        r"GLIBCXX_[\d.]+' not found",
        "libstdcxx",
        "the C++ runtime (libstdc++) is older than the one the wheel was built with",
    ),
    (r"No module named '([\w.]+)'", "missing", "a module is not installed"),
)


def classify(text: str | None) -> Cause | None:
    """Map an error text to its known cause, if any."""
    for pattern, key, explanation in KNOWN_ERRORS:
        if text and re.search(pattern, text):
            return Cause(key, explanation)
    return None


def first_line(text: str | None, limit: int = 160) -> str:
    line = next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------- reading facts


def step(facts: Facts, probe: str, name: str) -> dict[str, Any]:
    """One probe step's record ({} when the probe didn't run or didn't get that far)."""
    return ((facts.get("probes") or {}).get(probe) or {}).get("steps", {}).get(name) or {}


def step_error(facts: Facts, probe: str, name: str) -> str | None:
    """Why a step failed: its exception; or, for the step that started and never finished, the probe's crash or timeout.

    A step that never started has no error: the rules reading it skip.
    """
    record = step(facts, probe, name)
    if record.get("ok"):
        return None
    if record.get("error"):
        warnings = "\n".join(record.get("warnings", []))
        return f"{record['error']}\n{warnings}".strip()
    run = (facts.get("probes") or {}).get(probe) or {}
    if run.get("error") and (record.get("started") or not run.get("steps")):
        return f"{run['error']}\n{run.get('stderr', '')}".strip()
    return None


def pkg(facts: Facts, name: str) -> str | None:
    return (facts.get("packages") or {}).get(name)


def requirement(facts: Facts, name: str) -> str:
    return (facts.get("requirements") or {}).get(name, "")


def options(facts: Facts) -> dict[str, Any]:
    return facts.get("options") or {}


def wants_cuda(facts: Facts) -> bool:
    return str(options(facts).get("device") or "auto").startswith("cuda")


def wants_cpu(facts: Facts) -> bool:
    return options(facts).get("device") == "cpu"


def torch_ok(facts: Facts) -> bool:
    return bool(step(facts, "torch", "import").get("ok"))


def torch_version(facts: Facts) -> str | None:
    """The torch that actually imports, else the one pip's metadata names."""
    return step(facts, "torch", "import").get("version") or pkg(facts, "torch")


def torch_cuda(facts: Facts) -> str | None:
    return step(facts, "torch", "import").get("cuda")


def torch_hip(facts: Facts) -> str | None:
    return step(facts, "torch", "import").get("hip")


def nvml(facts: Facts) -> dict[str, Any]:
    return step(facts, "nvml", "init")


def gpus(facts: Facts) -> list[dict[str, Any]]:
    """The GPUs in nvidia-smi's order (NVML sees them even when torch can't), else as torch lists them."""
    record = nvml(facts)
    if record.get("ok"):
        return list(record.get("devices") or [])
    return list(step(facts, "torch", "cuda").get("devices") or [])


def capability(gpu: dict[str, Any]) -> tuple[int, int] | None:
    cap = gpu.get("capability")
    return (int(cap[0]), int(cap[1])) if isinstance(cap, (list, tuple)) and len(cap) == 2 else None


def pair_fix(facts: Facts) -> str:
    """Keep this torch and install the torchvision made for it (from the same wheel index)."""
    torch = torch_version(facts) or ""
    tv = torchvision_for_torch(torch)
    base = ".".join(str(n) for n in release(torch))
    return f"pip install torch=={base} torchvision=={tv}{index_flag(local_tag(torch))}" if tv else ""


def cuda_wheel_fix(facts: Facts, tag: str) -> str:
    """Reinstall this torch/torchvision pair from another CUDA wheel index."""
    torch = torch_version(facts) or ""
    base = ".".join(str(n) for n in release(torch))
    tv = torchvision_for_torch(torch)
    if not base or not tv:
        return f"pip install --force-reinstall torch torchvision{index_flag(tag)}"
    return f"pip install --force-reinstall torch=={base} torchvision=={tv}{index_flag(tag)}"


# ---------------------------------------------------------------- rules: Python and PyTorch


def rule_python(facts: Facts) -> list[Check]:
    py = facts.get("python") or {}
    version, spec = py.get("version"), requirement(facts, "python")
    if not version:
        return [Check("python.version", "skip", message="no Python facts")]
    found = f"{version} ({py.get('implementation', 'Python')})"
    if meets(version, spec):
        return [Check("python.version", "pass", found, spec)]
    return [
        Check(
            "python.version",
            "fail",
            found,
            spec,
            fix=f"create the environment with Python {spec.removeprefix('>=')} or newer",
            message=f"detrdoctor needs Python {spec}",
        )
    ]


def rule_torch_version(facts: Facts) -> list[Check]:
    installed, spec = pkg(facts, "torch"), requirement(facts, "torch")
    record = step(facts, "torch", "import")
    if not installed and not record.get("ok"):
        tv = pkg(facts, "torchvision")
        needed = torch_for_torchvision(tv) if tv else None
        fix = f"pip install torch=={needed} torchvision=={tv}" if needed else "pip install torch torchvision"
        return [Check("torch.version", "fail", "not installed", spec, fix=fix, message="torch is not installed")]
    if not record.get("ok"):
        error = step_error(facts, "torch", "import")
        cause = classify(error)
        return [
            Check(
                "torch.version",
                "fail",
                f"{installed}: import fails",
                "imports",
                fix=_torch_import_fix(facts, cause),
                message=f"{cause.explanation}: {first_line(error)}"
                if cause
                else first_line(error) or "torch did not import",
            )
        ]
    runtime = record.get("version", "")
    if installed and release(installed) != release(runtime):
        return [
            Check(
                "torch.version",
                "warn",
                f"imports {runtime} from {record.get('file', '?')}",
                f"{installed} (pip's metadata)",
                fix="pip uninstall -y torch  (repeat until pip finds none), then " + f"pip install torch=={installed}",
                message="two torch installs shadow each other: the one that imports is not the one pip manages",
            )
        ]
    if not meets(runtime, spec):
        return [
            Check(
                "torch.version",
                "fail",
                runtime,
                spec,
                fix="pip install --upgrade torch torchvision",
                message=f"detrdoctor needs torch {spec}",
            )
        ]
    return [Check("torch.version", "pass", runtime, spec)]


def _torch_import_fix(facts: Facts, cause: Cause | None) -> str:
    torch = pkg(facts, "torch") or ""
    if cause and cause.key == "numpy_abi_older":
        return 'pip install "numpy<2"'
    if cause and cause.key == "libstdcxx":
        return "conda install -c conda-forge libstdcxx-ng  (or use a venv on the system Python)"
    return f"pip install --force-reinstall torch=={torch}" if torch else "pip install --force-reinstall torch"


def rule_torch_build(facts: Facts) -> list[Check]:
    if not torch_ok(facts):
        return [Check("torch.build", "skip", message="torch did not import (see torch.version)")]
    if torch_hip(facts):
        found = f"ROCm {torch_hip(facts)}"
    elif torch_cuda(facts):
        found = f"CUDA {torch_cuda(facts)}"
    else:
        found = "CPU-only"
    debug = " (debug build: slow)" if step(facts, "torch", "import").get("debug") else ""
    return [
        Check(
            "torch.build",
            "warn" if debug else "pass",
            found + debug,
            "CUDA, ROCm or CPU",
            fix="pip install --force-reinstall torch" if debug else "",
        )
    ]


def rule_torchvision_pairs(facts: Facts) -> list[Check]:
    torch, tv = torch_version(facts), pkg(facts, "torchvision")
    if not torch:
        return [Check("torchvision.pairs", "skip", message="torch is not installed")]
    wanted_tv = torchvision_for_torch(torch)
    if not tv:
        fix = (
            f"pip install torchvision=={wanted_tv}{index_flag(local_tag(torch))}"
            if wanted_tv
            else "pip install torchvision"
        )
        return [
            Check(
                "torchvision.pairs",
                "fail",
                "not installed",
                f"torchvision {minor_of(wanted_tv)}.x",
                fix=fix,
                message="torchvision is not installed",
            )
        ]
    pin = exact_pin((facts.get("metadata") or {}).get("torchvision_requires_torch"))
    found = f"{tv} + torch {torch}"
    if pin:
        ok = release(pin) == release(torch)
        needed = pin
        expected = f"torch=={pin} (its pin)"
    else:
        ok = minor_of(tv) == minor_of(wanted_tv)
        needed = minor_of(torch_for_torchvision(tv))
        expected = f"{minor_of(wanted_tv)}.x for torch {minor_of(torch)}"
    if ok:
        return [Check("torchvision.pairs", "pass", found, expected)]
    other = torch_for_torchvision(tv)
    alternative = (
        f"; or keep torchvision and move torch: pip install torch=={pin or other} torchvision=={tv}"
        if (pin or other)
        else ""
    )
    return [
        Check(
            "torchvision.pairs",
            "fail",
            found,
            expected,
            fix=pair_fix(facts),
            message=f"torchvision {tv} is built for torch {needed}, not {torch}{alternative}",
        )
    ]


def rule_torchvision_ops(facts: Facts) -> list[Check]:
    if not torch_ok(facts) or not pkg(facts, "torchvision"):
        return [Check("torchvision.ops", "skip", message="needs torch and torchvision installed")]
    record = step(facts, "torch", "torchvision_ops")
    if record.get("ok"):
        library = str(record.get("library", "")).rsplit("/", 1)[-1]
        return [Check("torchvision.ops", "pass", f"nms runs ({library})", "compiled ops load")]
    error = step_error(facts, "torch", "torchvision_ops")
    if error is None:
        return [Check("torchvision.ops", "skip", message="the probe did not get this far")]
    cause = classify(error)
    fix = pair_fix(facts) or "pip install --force-reinstall torchvision"
    if cause and cause.key == "torchvision_abi":
        message = f"{cause.explanation}: {first_line(error)}"
    else:
        message = first_line(error)
    return [Check("torchvision.ops", "fail", "compiled ops don't load", "nms runs", fix=fix, message=message)]


def rule_torchvision_cuda(facts: Facts) -> list[Check]:
    record = step(facts, "torch", "torchvision_ops")
    if not record.get("ok") or "cuda_version" not in record:
        return [Check("torchvision.cuda", "skip", message="torchvision's ops did not load (see torchvision.ops)")]
    if torch_hip(facts):
        return [Check("torchvision.cuda", "skip", message="ROCm build: no CUDA version to compare")]
    code = int(record["cuda_version"])
    tv = f"{code // 1000}.{code % 1000 // 10}" if code > 0 else None
    torch = torch_cuda(facts)
    found, expected = f"CUDA {tv}" if tv else "CPU-only", f"CUDA {torch} (torch's)" if torch else "CPU-only (torch's)"
    if release(tv)[:2] == release(torch)[:2]:
        return [Check("torchvision.cuda", "pass", found, expected)]
    wanted = torchvision_for_torch(torch_version(facts) or "")
    fix = f"pip install --force-reinstall torchvision=={wanted}{index_flag(cuda_tag(torch) or 'cpu')}" if wanted else ""
    if tv and torch and release(tv)[0] == release(torch)[0]:
        return [
            Check(
                "torchvision.cuda",
                "warn",
                found,
                expected,
                fix=fix,
                message="torchvision and torch were built for different CUDA minor versions",
            )
        ]
    return [
        Check(
            "torchvision.cuda",
            "fail",
            found,
            expected,
            fix=fix,
            message="torchvision was built for another CUDA than torch: its GPU ops fail or it refuses to import",
        )
    ]


# ---------------------------------------------------------------- rules: CUDA


def rule_cuda_available(facts: Facts) -> list[Check]:
    cid = "cuda.available"
    if wants_cpu(facts):
        return [Check(cid, "skip", message="--device cpu")]
    if not torch_ok(facts):
        return [Check(cid, "skip", message="torch did not import (see torch.version)")]
    record = step(facts, "torch", "cuda")
    devices = record.get("devices") or []
    if record.get("available"):
        kernel_error = step_error(facts, "torch", "cuda_kernel")
        names = ", ".join(sorted({d.get("name", "?") for d in devices}))
        found = f"{len(devices)} GPU{'s' * (len(devices) != 1)}: {names}"
        if kernel_error:
            cause = classify(kernel_error)
            fix = cuda_wheel_fix(facts, _tag_for_gpus(facts)) if cause and cause.key == "arch" else ""
            return [
                Check(
                    cid,
                    "fail",
                    found,
                    "a CUDA kernel runs",
                    fix=fix,
                    message=f"a tiny CUDA kernel failed: {first_line(kernel_error)}",
                )
            ]
        return [Check(cid, "pass", found, "a CUDA kernel runs")]
    visible = gpus(facts)
    status = "fail" if wants_cuda(facts) or visible else "skip"
    env_devices = (facts.get("env") or {}).get("CUDA_VISIBLE_DEVICES")
    if not torch_cuda(facts) and not torch_hip(facts):
        tag = newest_tag_for_driver(nvml(facts).get("cuda_driver_version"))
        found = "CPU-only torch" + (f", {len(visible)} GPU(s) present" if visible else "")
        if status == "skip":
            return [Check(cid, "skip", found, message="no GPU here: training runs on the CPU")]
        return [
            Check(
                cid,
                status,
                found,
                "a CUDA build of torch",
                fix=cuda_wheel_fix(facts, tag),
                message="this torch was built without CUDA, so it can't use a GPU",
            )
        ]
    if env_devices is not None and env_devices.strip() in ("", "-1", "none", "NoDevFiles"):
        return [
            Check(
                cid,
                status,
                f"CUDA_VISIBLE_DEVICES={env_devices!r}",
                "at least one visible GPU",
                fix="unset CUDA_VISIBLE_DEVICES",
                message="CUDA_VISIBLE_DEVICES hides every GPU from torch",
            )
        ]
    if not visible:
        if status == "skip":
            return [Check(cid, "skip", "no GPU", message="no NVIDIA GPU here: training runs on the CPU")]
        return [
            Check(
                cid,
                "fail",
                "no GPU",
                "--device cuda needs a GPU",
                fix="run on a machine with an NVIDIA GPU, or pass --device cpu",
                message="--device cuda was asked for, but neither NVML nor torch sees a GPU",
            )
        ]
    text = step_error(facts, "torch", "cuda") or "\n".join(record.get("warnings", []))
    cause = classify(text)
    fix = _driver_fix(facts) if cause and cause.key == "driver_old" else ""
    return [
        Check(
            cid,
            "fail",
            f"{len(visible)} GPU(s) seen by NVML, none by torch",
            "torch.cuda.is_available()",
            fix=fix,
            message=(f"{cause.explanation}: " if cause else "")
            + (first_line(text) or "torch.cuda.is_available() is False"),
        )
    ]


def _driver_fix(facts: Facts) -> str:
    major = (release(torch_cuda(facts)) or (0,))[0]
    minimum = MIN_DRIVER.get(major)
    return (
        f"upgrade the NVIDIA driver to ≥ {minimum} (CUDA {major}.x builds need it)"
        if minimum
        else "upgrade the NVIDIA driver"
    )


def rule_cuda_driver(facts: Facts) -> list[Check]:
    cid = "cuda.driver"
    cuda = torch_cuda(facts)
    if wants_cpu(facts):
        return [Check(cid, "skip", message="--device cpu")]
    if not cuda:
        return [Check(cid, "skip", message="not a CUDA build of torch" if torch_ok(facts) else "torch did not import")]
    record = nvml(facts)
    if not record.get("ok"):
        error = step_error(facts, "nvml", "init") or "NVML did not run"
        cause = classify(error)
        if wants_cuda(facts):
            return [
                Check(
                    cid,
                    "fail",
                    "NVML unavailable",
                    "a working NVIDIA driver",
                    fix="install the NVIDIA driver (nvidia-smi must work)",
                    message=first_line(error),
                )
            ]
        reason = (
            "no NVIDIA driver here" if cause and cause.key == "no_driver" else f"NVML unavailable: {first_line(error)}"
        )
        return [Check(cid, "skip", message=reason)]
    driver, driver_cuda = record.get("driver_version", ""), record.get("cuda_driver_version", "")
    major = (release(cuda) or (0,))[0]
    minimum = MIN_DRIVER.get(major)
    found = f"{driver} (CUDA ≤ {driver_cuda})" if driver_cuda else driver
    if minimum is None:
        ok = release(driver_cuda)[:1] >= (major,)
        return [
            Check(
                cid,
                "pass" if ok else "fail",
                found,
                f"a driver for CUDA {cuda}",
                fix="" if ok else "upgrade the NVIDIA driver",
                message="" if ok else f"the driver supports CUDA up to {driver_cuda}",
            )
        ]
    expected = f"≥ {minimum} for CUDA {cuda}"
    if (release(driver) or (0,))[0] >= minimum:
        return [Check(cid, "pass", found, expected)]
    tag = newest_tag_for_driver(driver_cuda)
    return [
        Check(
            cid,
            "fail",
            found,
            expected,
            fix=_driver_fix(facts),
            message=f"torch is built for CUDA {cuda}, which needs driver ≥ {minimum}; "
            f"or keep the driver and use a torch built for CUDA ≤ {driver_cuda} ({WHEEL_INDEX}{tag})",
        )
    ]


def arch_support(cap: tuple[int, int], arch_list: list[str]) -> str | None:
    """'sass' when the wheel has kernels this GPU runs, 'ptx' when only JIT-compilable PTX fits, else None.

    SASS for sm_Mn runs on any sm_Mm with m ≥ n (same major); 'a'/'f' variants run only on their exact arch;
    PTX (compute_XY) JIT-compiles for any newer GPU.
    """
    ptx = False
    for arch in arch_list:
        match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", arch)
        if not match:
            continue
        kind, major, minor, variant = match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)
        if kind == "sm" and major == cap[0] and (minor == cap[1] if variant else minor <= cap[1]):
            return "sass"
        if kind == "compute" and not variant and (major, minor) <= cap:
            ptx = True
    return "ptx" if ptx else None


def min_cuda_for(cap: tuple[int, int]) -> tuple[int, int]:
    """The oldest CUDA that compiles for this architecture (what the wheel must be built with)."""
    if cap >= (10, 0):
        return (12, 8)
    if cap >= (8, 9):
        return (11, 8)
    if cap >= (8, 6):
        return (11, 1)
    return (10, 2)


def _tag_for_gpus(facts: Facts) -> str:
    caps = [c for c in (capability(g) for g in gpus(facts)) if c]
    need = max((min_cuda_for(c) for c in caps), default=(0, 0))
    return newest_tag_for_driver(nvml(facts).get("cuda_driver_version"), at_least=need)


def rule_cuda_arch(facts: Facts) -> list[Check]:
    cid = "cuda.arch"
    if wants_cpu(facts):
        return [Check(cid, "skip", message="--device cpu")]
    if torch_hip(facts):
        return [Check(cid, "skip", message="ROCm build: gfx targets are not checked")]
    devices = [g for g in gpus(facts) if capability(g)]
    arch_list = step(facts, "torch", "libs").get("arch_list") or []
    if not devices:
        return [Check(cid, "skip", message="no GPU here")]
    if not arch_list:
        return [Check(cid, "skip", message="torch's arch list is unknown (torch did not import, or a CPU-only build)")]
    verdicts = [(g, cap, arch_support(cap, arch_list)) for g in devices if (cap := capability(g))]
    seen: dict[str, str] = {}
    for g, cap, _ in verdicts:
        seen.setdefault(f"{g.get('name', '?')} sm_{cap[0]}{cap[1]}", "")
    found = ", ".join(seen)
    sass = [a for a in arch_list if a.startswith("sm_")]
    expected = f"in {sass[0]}…{sass[-1]}" if len(sass) > 2 else "in " + " ".join(sass or arch_list)
    missing = [f"sm_{c[0]}{c[1]}" for _, c, v in verdicts if v is None]
    ptx_only = [f"sm_{c[0]}{c[1]}" for _, c, v in verdicts if v == "ptx"]
    if not missing and not ptx_only:
        return [Check(cid, "pass", found, expected)]
    fix = cuda_wheel_fix(facts, _tag_for_gpus(facts))
    torch_warning = next(
        (w for w in step(facts, "torch", "cuda").get("warnings", []) if (cause := classify(w)) and cause.key == "arch"),
        "",
    )
    if missing:
        arches = ", ".join(sorted(set(missing)))
        return [
            Check(
                cid,
                "fail",
                found,
                expected,
                fix=fix,
                message=f"torch {torch_version(facts)} has kernels for {' '.join(arch_list)} only, none for {arches}: "
                "CUDA ops fail with 'no kernel image is available'"
                + (f" ({first_line(torch_warning, 120)})" if torch_warning else ""),
            )
        ]
    arches = ", ".join(sorted(set(ptx_only)))
    return [
        Check(
            cid,
            "warn",
            found,
            expected,
            fix=fix,
            message=f"only PTX for {arches}: kernels JIT-compile on first use (slow first run) and some libraries "
            "may not run",
        )
    ]


def rule_cuda_cudnn(facts: Facts) -> list[Check]:
    libs = step(facts, "torch", "libs")
    if not torch_ok(facts) or not torch_cuda(facts):
        return [
            Check(
                "cuda.cudnn", "skip", message="not a CUDA build of torch" if torch_ok(facts) else "torch did not import"
            )
        ]
    if not libs:
        return [Check("cuda.cudnn", "skip", message="the torch probe did not get this far")]
    if libs.get("cudnn_available"):
        return [Check("cuda.cudnn", "pass", cudnn_string(libs.get("cudnn_version")), "loads")]
    return [
        Check(
            "cuda.cudnn",
            "warn",
            "not loadable",
            "loads",
            fix=f"pip install --force-reinstall torch=={pkg(facts, 'torch')}",
            message="torch can't load cuDNN: convolutions fall back to slow kernels",
        )
    ]


def rule_cuda_nccl(facts: Facts) -> list[Check]:
    libs = step(facts, "torch", "libs")
    if not torch_ok(facts) or not (torch_cuda(facts) or torch_hip(facts)):
        return [
            Check(
                "cuda.nccl", "skip", message="not a GPU build of torch" if torch_ok(facts) else "torch did not import"
            )
        ]
    if not libs:
        return [Check("cuda.nccl", "skip", message="the torch probe did not get this far")]
    if libs.get("nccl_version"):
        return [Check("cuda.nccl", "pass", libs["nccl_version"], "present")]
    if (facts.get("python") or {}).get("platform") != "linux":
        return [Check("cuda.nccl", "skip", message="NCCL ships only with Linux builds")]
    status = "warn" if len(gpus(facts)) > 1 else "pass"
    return [
        Check(
            "cuda.nccl",
            status,
            "not found",
            "present",
            fix=f"pip install --force-reinstall torch=={pkg(facts, 'torch')}" if status == "warn" else "",
            message="multi-GPU (DDP) training needs NCCL" if status == "warn" else "only multi-GPU training needs NCCL",
        )
    ]


def rule_cuda_bf16(facts: Facts) -> list[Check]:
    if wants_cpu(facts):
        return [Check("cuda.bf16", "skip", message="--device cpu")]
    devices = gpus(facts)
    if not devices:
        return [Check("cuda.bf16", "skip", message="no GPU here")]
    if torch_hip(facts):
        bf16 = step(facts, "torch", "cuda").get("bf16")
        return [
            Check(
                "cuda.bf16",
                "pass" if bf16 else "warn",
                "yes" if bf16 else "no",
                "for --amp bf16",
                fix="" if bf16 else "--amp fp16",
                message="" if bf16 else "this GPU has no bf16: use --amp fp16",
            )
        ]
    without = [
        f"{g.get('name', '?')} (sm_{cap[0]}{cap[1]})" for g in devices if (cap := capability(g)) and cap < (8, 0)
    ]
    if not without:
        return [Check("cuda.bf16", "pass", "all GPUs (sm_80+)", "sm_80+ for --amp bf16")]
    return [
        Check(
            "cuda.bf16",
            "warn",
            "no bf16: " + ", ".join(sorted(set(without))),
            "sm_80+ for --amp bf16",
            fix="--amp fp16",
            message="these GPUs have no bf16 units: --amp bf16 is emulated (slow) or fails",
        )
    ]


def rule_cuda_device_order(facts: Facts) -> list[Check]:
    cid = "cuda.device_order"
    devices = list(nvml(facts).get("devices") or [])
    if len(devices) < 2:
        return [Check(cid, "skip", message="fewer than two GPUs")]
    names = [d.get("name", "?") for d in devices]
    order = (facts.get("env") or {}).get("CUDA_DEVICE_ORDER")
    if len(set(names)) == 1:
        return [Check(cid, "pass", f"{len(names)}× {names[0]}", "any (identical GPUs)")]
    found = f"CUDA_DEVICE_ORDER={order}" if order else "CUDA_DEVICE_ORDER unset"
    if order == "PCI_BUS_ID":
        return [Check(cid, "pass", found, "PCI_BUS_ID (cuda:N = nvidia-smi's N)")]
    torch_names = [d.get("name") for d in step(facts, "torch", "cuda").get("devices") or []]
    if torch_names and not (facts.get("env") or {}).get("CUDA_VISIBLE_DEVICES") and torch_names != names:
        message = f"torch's cuda:0 is {torch_names[0]} but nvidia-smi's GPU 0 is {names[0]}"
    else:
        message = (
            f"mixed GPUs ({', '.join(names)}): torch counts fastest first, nvidia-smi by PCI bus, so indices can differ"
        )
    return [
        Check(
            cid,
            "warn",
            found,
            "PCI_BUS_ID (cuda:N = nvidia-smi's N)",
            fix="export CUDA_DEVICE_ORDER=PCI_BUS_ID",
            message=message,
        )
    ]


# ---------------------------------------------------------------- rules: NumPy, pycocotools, scipy


def rule_numpy_version(facts: Facts) -> list[Check]:
    record = step(facts, "numeric", "numpy")
    installed = pkg(facts, "numpy")
    if record.get("ok"):
        return [Check("numpy.version", "pass", record.get("version", installed or ""), "imports")]
    if not installed:
        return [
            Check(
                "numpy.version",
                "fail",
                "not installed",
                "imports",
                fix="pip install numpy",
                message="NumPy is not installed",
            )
        ]
    error = step_error(facts, "numeric", "numpy")
    if error is None:
        return [Check("numpy.version", "skip", installed, message="the NumPy probe did not run")]
    return [
        Check(
            "numpy.version",
            "fail",
            f"{installed}: import fails",
            "imports",
            fix=f"pip install --force-reinstall numpy=={installed}",
            message=first_line(error),
        )
    ]


NUMPY_CAUSES = ("numpy_abi_newer", "numpy_abi_older", "numpy_alias")
PYCOCOTOOLS_FIX = 'pip install --force-reinstall --no-cache-dir "pycocotools>=2.0.8"'
PYCOCOTOOLS_ALIAS_FIX = 'pip uninstall -y pycocotools && pip install "pycocotools>=2.0.8"'


def _numpy_causes(facts: Facts) -> dict[str, tuple[Cause, str]]:
    """Which compiled extensions reject the installed NumPy: package → (cause, error text)."""
    found: dict[str, tuple[Cause, str]] = {}
    torch_texts = [step_error(facts, "torch", "numpy") or "", *step(facts, "torch", "import").get("warnings", [])]
    for text in torch_texts:
        cause = classify(text)
        if cause and cause.key in NUMPY_CAUSES:
            found["torch"] = (cause, text)
            break
    for name in ("pycocotools", "cocoeval"):
        text = step_error(facts, "numeric", name) or ""
        cause = classify(text)
        if cause and cause.key in NUMPY_CAUSES:
            found["pycocotools"] = (cause, text)
            break
    return found


def _numpy_fix(package: str, cause: Cause) -> str:
    if package == "pycocotools":
        return PYCOCOTOOLS_ALIAS_FIX if cause.key == "numpy_alias" else PYCOCOTOOLS_FIX
    return (
        'pip install "numpy<2"  (or a torch ≥ 2.3, built for NumPy 2)'
        if cause.key == "numpy_abi_older"
        else "pip install --force-reinstall torch"
    )


def rule_numpy_abi(facts: Facts) -> list[Check]:
    numpy = step(facts, "numeric", "numpy").get("version") or pkg(facts, "numpy")
    if not numpy:
        return [Check("numpy.abi", "skip", message="NumPy is not installed")]
    broken = _numpy_causes(facts)
    loaded = {
        "torch": step(facts, "torch", "numpy").get("ok"),
        "pycocotools": step(facts, "numeric", "pycocotools").get("ok"),
    }
    verdicts = {p: "rejects" if p in broken else "ok" if loaded[p] else "not checked" for p in ("torch", "pycocotools")}
    found, expected = ", ".join(f"{p} {v}" for p, v in verdicts.items()), f"accept NumPy {numpy}"
    if broken:
        package, (cause, _) = next(iter(broken.items()))
        fixes = " ; ".join(dict.fromkeys(_numpy_fix(p, c) for p, (c, _) in broken.items()))
        return [Check("numpy.abi", "fail", found, expected, fix=fixes, message=f"{package}: {cause.explanation}")]
    if "ok" not in verdicts.values():
        return [Check("numpy.abi", "skip", found, message="neither torch nor pycocotools got far enough to tell")]
    return [Check("numpy.abi", "pass", found, expected)]


def rule_pycocotools(facts: Facts) -> list[Check]:
    cid = "pycocotools.cocoeval"
    version, spec = pkg(facts, "pycocotools"), requirement(facts, "pycocotools")
    if not version:
        return [
            Check(
                cid,
                "fail",
                "not installed",
                "COCOeval runs",
                fix='pip install "pycocotools>=2.0.8"',
                message="pycocotools is not installed",
            )
        ]
    for name, what in (("pycocotools", "import fails"), ("cocoeval", "COCOeval fails")):
        error = step_error(facts, "numeric", name)
        if error:
            cause = classify(error)
            if cause and cause.key in NUMPY_CAUSES:
                fix, message = _numpy_fix("pycocotools", cause), f"{cause.explanation}: {first_line(error)}"
            else:
                fix, message = PYCOCOTOOLS_FIX, first_line(error)
            return [Check(cid, "fail", f"{version}: {what}", "COCOeval runs", fix=fix, message=message)]
    record = step(facts, "numeric", "cocoeval")
    if not record:
        return [Check(cid, "skip", version, message="the pycocotools probe did not run")]
    ap = record.get("ap")
    if ap != 1.0:
        return [
            Check(
                cid,
                "fail",
                f"{version}: AP {ap}",
                "AP 1.0 for perfect detections",
                fix=PYCOCOTOOLS_FIX,
                message="COCOeval scores perfect detections wrongly: the install is broken",
            )
        ]
    if not meets(version, spec):
        return [
            Check(
                cid,
                "warn",
                version,
                spec,
                fix='pip install --upgrade "pycocotools>=2.0.8"',
                message=f"detrdoctor expects pycocotools {spec}",
            )
        ]
    return [Check(cid, "pass", f"{version}, AP 1.0", "COCOeval AP 1.0")]


def rule_scipy(facts: Facts) -> list[Check]:
    version, spec = pkg(facts, "scipy"), requirement(facts, "scipy")
    if not version:
        return [
            Check(
                "scipy.lsa",
                "fail",
                "not installed",
                "linear_sum_assignment runs",
                fix=f'pip install "scipy{spec}"',
                message="the Hungarian matcher needs scipy",
            )
        ]
    error = step_error(facts, "numeric", "scipy")
    if error:
        cause = classify(error)
        return [
            Check(
                "scipy.lsa",
                "fail",
                f"{version}: fails",
                "linear_sum_assignment runs",
                fix=f"pip install --force-reinstall scipy=={version}",
                message=(f"{cause.explanation}: " if cause else "") + first_line(error),
            )
        ]
    if not step(facts, "numeric", "scipy"):
        return [Check("scipy.lsa", "skip", version, message="the scipy probe did not run (see numpy.version)")]
    if not meets(version, spec):
        return [
            Check(
                "scipy.lsa",
                "warn",
                version,
                spec,
                fix=f'pip install --upgrade "scipy{spec}"',
                message=f"detrdoctor expects scipy {spec}",
            )
        ]
    return [Check("scipy.lsa", "pass", version, "solves a 3×3")]


def rule_cli_deps(facts: Facts) -> list[Check]:
    checks = []
    for name in ("typer", "rich"):
        version, spec = pkg(facts, name), requirement(facts, name)
        if version and meets(version, spec):
            checks.append(Check(f"deps.{name}", "pass", version, spec))
        else:
            checks.append(
                Check(
                    f"deps.{name}",
                    "fail",
                    version or "not installed",
                    spec,
                    fix=f'pip install --upgrade "{name}{spec}"',
                    message=f"detrdoctor's CLI needs {name} {spec}",
                )
            )
    return checks


# ---------------------------------------------------------------- rules: profiling and NVML


def rule_py_spy(facts: Facts) -> list[Check]:
    info = facts.get("py_spy") or {}
    spec = requirement(facts, "py-spy")
    fix = f'pip install "py-spy{spec}"'
    if not info.get("path"):
        return [Check("profiling.py-spy", "warn", "not found", spec, fix=fix, message="--profile-cpu needs py-spy")]
    run = info.get("run") or {}
    if not run.get("ok"):
        return [
            Check(
                "profiling.py-spy",
                "warn",
                f"{info['path']} does not run",
                spec,
                fix="pip install --force-reinstall py-spy",
                message=first_line(run.get("error") or run.get("output")),
            )
        ]
    version = (run.get("output") or "").replace("py-spy", "").strip() or pkg(facts, "py-spy") or "?"
    if not meets(version, spec):
        return [
            Check(
                "profiling.py-spy",
                "warn",
                version,
                spec,
                fix=f'pip install --upgrade "py-spy{spec}"',
                message=f"detrdoctor expects py-spy {spec}",
            )
        ]
    return [Check("profiling.py-spy", "pass", version, spec)]


def rule_ptrace(facts: Facts) -> list[Check]:
    cid = "profiling.ptrace"
    host = facts.get("host") or {}
    if (facts.get("python") or {}).get("platform") != "linux":
        return [Check(cid, "skip", message="ptrace rules are checked on Linux only")]
    scope, cap = host.get("ptrace_scope"), host.get("cap_sys_ptrace")
    found = ("no Yama" if scope is None else f"ptrace_scope={scope}") + (", CAP_SYS_PTRACE" if cap else "")
    expected = "CAP_SYS_PTRACE/scope 0"
    if cap or (scope in (None, 0)):
        return [Check(cid, "pass", found, expected)]
    if host.get("in_container"):
        fix = "docker run --cap-add SYS_PTRACE …  (or on the host: sudo sysctl kernel.yama.ptrace_scope=0)"
    else:
        fix = "sudo sysctl kernel.yama.ptrace_scope=0"
    if scope == 3:
        return [
            Check(
                cid,
                "warn",
                found,
                expected,
                fix="set kernel.yama.ptrace_scope below 3 and reboot",
                message="ptrace is disabled until reboot: py-spy can't attach to anything",
            )
        ]
    if scope == 1:
        message = "py-spy may attach to the trainer that starts it, but not to its DataLoader workers"
    else:
        message = "only a process with CAP_SYS_PTRACE may attach: --profile-cpu fails"
    return [Check(cid, "warn", found, expected, fix=fix, message=message)]


def rule_nvml_package(facts: Facts) -> list[Check]:
    cid = "nvml.package"
    official, old = pkg(facts, "nvidia-ml-py"), pkg(facts, "pynvml")
    spec = requirement(facts, "nvidia-ml-py")
    ships = (facts.get("metadata") or {}).get("pynvml_ships_module")
    swap = "pip uninstall -y pynvml && pip install --force-reinstall nvidia-ml-py"
    if official and old and ships is not False:
        return [
            Check(
                cid,
                "warn",
                f"nvidia-ml-py {official} + pynvml {old}",
                "nvidia-ml-py only",
                fix=swap,
                message="both packages write pynvml.py: whichever installed last wins, and the deprecated one lags "
                "behind the driver",
            )
        ]
    if not official and old:
        return [
            Check(
                cid,
                "warn",
                f"pynvml {old} (deprecated)",
                f"nvidia-ml-py{spec}",
                fix=swap,
                message="the pynvml package is deprecated; nvidia-ml-py is NVIDIA's own binding",
            )
        ]
    if not official:
        return [
            Check(
                cid,
                "warn",
                "not installed",
                f"nvidia-ml-py{spec}",
                fix=f'pip install "nvidia-ml-py{spec}"',
                message="GPU monitoring (memory, utilisation, driver checks) needs it",
            )
        ]
    note = f" + pynvml {old} (shim)" if old else ""
    if not meets(official, spec):
        return [
            Check(
                cid,
                "warn",
                f"nvidia-ml-py {official}{note}",
                spec,
                fix=f'pip install --upgrade "nvidia-ml-py{spec}"',
                message=f"detrdoctor expects nvidia-ml-py {spec}",
            )
        ]
    return [Check(cid, "pass", f"nvidia-ml-py {official}{note}", f"nvidia-ml-py{spec}")]


# ---------------------------------------------------------------- rules: host limits


def rule_shm(facts: Facts) -> list[Check]:
    shm = (facts.get("host") or {}).get("shm")
    if not shm:
        return [Check("host.shm", "skip", message="no /dev/shm on this system")]
    total = int(shm.get("total_bytes", 0))
    found = f"{byte_size(total)} ({byte_size(int(shm.get('free_bytes', total)))} free)"
    if total >= SHM_MIN_BYTES:
        return [Check("host.shm", "pass", found, f"≥ {byte_size(SHM_MIN_BYTES)}")]
    return [
        Check(
            "host.shm",
            "warn",
            found,
            f"≥ {byte_size(SHM_MIN_BYTES)}",
            fix="docker run --shm-size=8g …  (or train with --num-workers 0)",
            message="DataLoader workers pass batches through /dev/shm; too little kills them with a bus error",
        )
    ]


def rule_nofile(facts: Facts) -> list[Check]:
    limits = (facts.get("host") or {}).get("nofile")
    if not limits:
        return [Check("host.nofile", "skip", message="unknown on this system")]
    soft, hard = limits.get("soft"), limits.get("hard")
    found = f"{soft} (hard {hard})"
    if soft == "unlimited" or int(soft) >= NOFILE_MIN:
        return [Check("host.nofile", "pass", found, f"≥ {NOFILE_MIN}")]
    if hard == "unlimited" or int(hard) >= NOFILE_MIN:
        fix = f"ulimit -n {65536 if hard == 'unlimited' else min(int(hard), 65536)}"
    else:
        fix = "docker run --ulimit nofile=65536:65536 …  (or raise nofile in /etc/security/limits.conf)"
    return [
        Check(
            "host.nofile",
            "warn",
            found,
            f"≥ {NOFILE_MIN}",
            fix=fix,
            message="DataLoader workers share tensors through file descriptors: 'Too many open files' crashes training",
        )
    ]


def effective_cpus(facts: Facts) -> int | None:
    cpus = (facts.get("host") or {}).get("cpus") or {}
    count = cpus.get("affinity") or cpus.get("count")
    quota = cpus.get("cgroup_quota")
    if count and quota:
        return max(1, min(int(count), math.ceil(float(quota))))
    return int(count) if count else None


def rule_cpus(facts: Facts) -> list[Check]:
    cpus = effective_cpus(facts)
    if not cpus:
        return [Check("host.cpus", "skip", message="CPU count unknown")]
    detail = (facts.get("host") or {}).get("cpus") or {}
    found = f"{cpus} CPUs" + (f" (cgroup quota {detail['cgroup_quota']})" if detail.get("cgroup_quota") else "")
    asked = options(facts).get("num_workers")
    workers = DataConfig().num_workers if asked is None else int(asked)
    expected = f"≥ {workers} ({'--num-workers' if asked is not None else 'default num_workers'})"
    if workers <= cpus:
        return [Check("host.cpus", "pass", found, expected)]
    return [
        Check(
            "host.cpus",
            "warn",
            found,
            expected,
            fix=f"--num-workers {cpus}",
            message=f"{workers} workers on {cpus} CPUs compete with the training loop: slower, not faster",
        )
    ]


def rule_cpu_bf16(facts: Facts) -> list[Check]:
    """Whether `--amp bf16` pays on this CPU: it does with bf16 matrix instructions, and is emulated without them.
    Never a warning: fp32 training is fine."""
    cid = "host.cpu_bf16"
    cpus = (facts.get("host") or {}).get("cpus") or {}
    if "bf16" not in cpus:
        return [Check(cid, "skip", message="CPU flags unknown")]
    features = list(cpus["bf16"])
    found, message = (
        (
            ", ".join(features) + " (--amp bf16 pays)",
            "--amp bf16 speeds up CPU training (DETR-R50 step ~0.65× fp32's on a Zen 4)",
        )
        if features
        else (
            "none (--amp bf16 is emulated: slower)",
            "no bf16 instructions: --amp bf16 is emulated and slower than fp32 here; train with --amp off",
        )
    )
    return [Check(cid, "pass", found, "avx512_bf16 or amx_bf16", message=message)]


def rule_disk(facts: Facts) -> list[Check]:
    disk = (facts.get("host") or {}).get("disk")
    if not disk:
        return [Check("host.disk", "skip", message="unknown")]
    free = int(disk.get("free_bytes", 0))
    found, expected = f"{byte_size(free)} free", f"≥ {byte_size(DISK_MIN_BYTES)} in ./runs"
    if free >= DISK_MIN_BYTES:
        return [Check("host.disk", "pass", found, expected)]
    return [
        Check(
            "host.disk",
            "warn",
            found,
            expected,
            fix="free some space, or pass --output-dir on a larger disk",
            message=f"{disk.get('measured_at', disk.get('path', '?'))} is nearly full; a DETR-R50 checkpoint takes "
            "hundreds of MB",
        )
    ]


# ---------------------------------------------------------------- rules: dataset (--coco-path)


def _splits(facts: Facts) -> list[dict[str, Any]]:
    run = (facts.get("probes") or {}).get("dataset") or {}
    return [record for name, record in (run.get("steps") or {}).items() if name.startswith("split:")]


def rule_dataset(facts: Facts) -> list[Check]:
    """Rows only when a dataset was checked (--coco-path): the probe's layout, files and decoding, then the
    dataset doctor's judgement of the data against the profile's model (its rows as it made them)."""
    run = (facts.get("probes") or {}).get("dataset")
    if not run:
        return []
    root = (options(facts).get("coco_path")) or "?"
    if not step(facts, "dataset", "root").get("exists"):
        error = step_error(facts, "dataset", "root")
        if error:
            return [Check("dataset.layout", "fail", "probe failed", "a dataset folder", message=first_line(error))]
        archive = step(facts, "dataset", "root").get("archive")
        return [
            Check(
                "dataset.layout",
                "fail",
                f"{root}: an archive" if archive else f"{root}: not found",
                "a folder",
                fix=f"unzip it first (unzip {root} -d {Path(root).with_suffix('')}), then --data that folder"
                if archive
                else "pass the folder of the export (COCO, Roboflow, CVAT or Label Studio)",
                message=f"--data {root} is not a folder",
            )
        ]
    splits = _splits(facts)
    rows = [_layout(facts), _annotations(splits), _images(splits), _decode(splits)]
    doctor = step(facts, "dataset", "doctor")
    if doctor.get("checks"):
        rows += doctor["checks"]
    elif step_error(facts, "dataset", "doctor"):
        rows.append(
            Check(  # as the doctor's rows: a check plus count and example
                "data.checks",
                "fail",
                "not judged",
                "the dataset doctor's checks",
                message=first_line(step_error(facts, "dataset", "doctor")),
                count=None,
                example="",
            )
        )
    return rows


def _layout(facts: Facts) -> Check:
    layout = step(facts, "dataset", "layout")
    expected = "a layout detrdoctor reads"
    if layout.get("description"):
        return Check("dataset.layout", "pass", layout["description"], expected)
    error = step_error(facts, "dataset", "layout") or "layout not determined"
    return Check(
        "dataset.layout",
        "fail",
        "no usable layout",
        expected,
        fix="pass --train-annotations FILE and --train-images DIR (and the --val-* ones)",
        message=first_line(error.split(": ", 1)[-1] if error.startswith("DataError") else error),
    )


def _annotations(splits: list[dict[str, Any]]) -> Check:
    parsed = [s for s in splits if s.get("counts")]
    expected = "COCO JSON" if all(s.get("format", "coco") == "coco" for s in splits) else "readable annotations"
    broken = [s for s in splits if s.get("parse_error")]
    found = (
        f"{sum(s['counts']['images'] for s in parsed)} images, {sum(s['counts']['annotations'] for s in parsed)} boxes"
        if parsed
        else ""
    )
    if broken:
        s = broken[0]
        what, _, fix = first_line(s["parse_error"]).partition("; fix: ")
        problems = [line for b in broken for line in b.get("problems") or [b["parse_error"]]]
        return Check(  # a check plus every problem line
            "dataset.annotations",
            "fail",
            found or "not usable",
            expected,
            fix=fix or f"regenerate or re-download {s['annotations']}",
            message=what,
            problems=problems,
        )
    if not parsed:
        return Check("dataset.annotations", "skip", message="no annotation file found (see dataset.layout)")
    return Check("dataset.annotations", "pass", found, expected)


def _images(splits: list[dict[str, Any]]) -> Check:
    parsed = [s for s in splits if s.get("counts")]
    if not parsed:
        return Check("dataset.images", "skip", message="no parsed annotation file")
    missing = [s for s in parsed if s.get("missing_images")]
    if not missing:
        return Check(
            "dataset.images",
            "pass",
            f"all {sum(s['counts']['images'] for s in parsed)} present",
            "all referenced exist",
        )
    found = ", ".join(f"{s['name']}: {s['missing_images']} of {s['counts']['images']} missing" for s in missing)
    first = "; ".join(f"{s['name']}/{', '.join(s.get('missing_first', []))}" for s in missing)
    return Check(
        "dataset.images",
        "fail",
        found,
        "all referenced exist",
        fix="copy the missing images, or drop them from the annotation file",
        message=f"first missing: {first}",
    )


def _decode(splits: list[dict[str, Any]]) -> Check:
    decodes = [(s, s["decode"]) for s in splits if s.get("decode")]
    tried = sum(d.get("tried", 0) for _, d in decodes)
    errors = [d["error"] for _, d in decodes if d.get("error")]
    failed = [(s["name"], f) for s, d in decodes for f in d.get("failed", [])]
    if errors and not tried:
        return Check(
            "dataset.decode",
            "warn",
            "not tried",
            "a sample decodes",
            fix="pip install pillow",
            message=first_line(errors[0]),
        )
    if not tried:
        return Check("dataset.decode", "skip", message="no images to sample")
    if not failed:
        return Check("dataset.decode", "pass", f"{tried}/{tried} decoded", "a sample decodes")
    name, first = failed[0]
    return Check(
        "dataset.decode",
        "fail",
        f"{len(failed)} of {tried} sampled images fail",
        "a sample decodes",
        fix="re-copy or re-encode the broken images",
        message=f"{name}/{first['name']}: {first_line(first['error'])}",
    )


RULES: tuple[Callable[[Facts], list[Check]], ...] = (
    rule_python,
    rule_torch_version,
    rule_torch_build,
    rule_torchvision_pairs,
    rule_torchvision_ops,
    rule_torchvision_cuda,
    rule_cuda_available,
    rule_cuda_driver,
    rule_cuda_arch,
    rule_cuda_cudnn,
    rule_cuda_nccl,
    rule_cuda_bf16,
    rule_cuda_device_order,
    rule_numpy_version,
    rule_numpy_abi,
    rule_pycocotools,
    rule_scipy,
    rule_cli_deps,
    rule_py_spy,
    rule_ptrace,
    rule_nvml_package,
    rule_shm,
    rule_nofile,
    rule_cpus,
    rule_cpu_bf16,
    rule_disk,
    rule_dataset,
)


def judge(facts: Facts) -> list[Check]:
    """Every rule's checks, in a fixed order."""
    return [c for rule in RULES for c in rule(facts)]
