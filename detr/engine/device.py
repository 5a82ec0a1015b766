"""Device and mixed-precision choices, checked before any work starts.

Parsing a device name needs no torch (env-check judges names before its probes import it); resolving one does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from detr.errors import ConfigError

if TYPE_CHECKING:
    import torch

AMP_MODES = ("off", "bf16", "fp16")
_AMP_DTYPE_NAMES = {"off": None, "bf16": "bfloat16", "fp16": "float16"}
DEVICE_HINT = "use auto, cpu, cuda or cuda:N"


def parse_device(name: str, flag: str = "--device") -> tuple[str, int | None]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' → (type, index); anything else is a ConfigError naming `flag`."""
    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", name.strip())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ConfigError(f"{flag} {name!r}: unknown device; {DEVICE_HINT}")
    return match.group(1), int(match.group(2)) if match.group(2) is not None else None


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of an AMP mode (None for off), without checking the device."""
    import torch

    if amp not in _AMP_DTYPE_NAMES:
        raise ConfigError(f"--amp must be off, bf16 or fp16, got '{amp}'")
    name = _AMP_DTYPE_NAMES[amp]
    return None if name is None else getattr(torch, name)


def resolve_device(name: str) -> torch.device:
    """`auto` → the first GPU if there is one, else the CPU; `cuda` without a GPU is an error."""
    import torch

    kind, index = parse_device(name)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: no CUDA GPU is visible (try --device cpu, or run `detrdoctor env-check`)"
            )
        if index is not None and index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    return torch.device(kind, index) if index is not None else torch.device(kind)


def resolve_amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp`, refusing combinations the device cannot run."""
    import torch

    dtype = amp_dtype(amp)
    if amp == "fp16" and device.type == "cpu":
        raise ConfigError("--amp fp16 needs a CUDA GPU (its GradScaler is CUDA-only); use --amp bf16 or off on the CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp bf16: {torch.cuda.get_device_name(device)} does not support bf16; use --amp fp16")
    return dtype


def cpu_bf16_features(cpuinfo: str | None = None) -> list[str]:
    """The CPU's bf16 matrix instructions (`avx512_bf16`, `amx_bf16`) from /proc/cpuinfo's flags; [] when it has
    none or the file is not there (not Linux).

    With one of them `--amp bf16` pays on the CPU: oneDNN runs the convolutions and matrix products in bf16
    (DETR-R50's train step took ~0.65× fp32's on a 2-core Zen 4 with AVX-512 BF16, benchmarks/bench_vs_hf.py);
    without them bf16 is emulated and slower than float32.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return []
    flags = {
        flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()
    }
    return [name for name in ("avx512_bf16", "amx_bf16") if name in flags]
