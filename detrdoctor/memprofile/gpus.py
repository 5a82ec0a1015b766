"""Device memory to plan for: a size such as `24GiB`, or the name of a known GPU."""

from __future__ import annotations

import re
from dataclasses import dataclass

from detr.errors import ConfigError

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class GPU:
    """A GPU model: the memory CUDA reports as total (nvidia-smi's figure) and whether it runs bf16."""

    name: str
    memory_bytes: int
    bf16: bool

    def usable_bytes(self, safety_margin: float) -> int:
        """What a point may use and still be said to fit: total minus the safety margin."""
        return int(self.memory_bytes * (1 - safety_margin))


# Totals as nvidia-smi prints them, a little under the marketed size: the driver keeps some for itself.
KNOWN_GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        GPU("V100-16GB", 16160 * MiB, bf16=False),
        GPU("V100-32GB", 32510 * MiB, bf16=False),
        GPU("T4", 15360 * MiB, bf16=False),
        GPU("A10", 23028 * MiB, bf16=True),
        GPU("A10G", 23028 * MiB, bf16=True),
        GPU("L4", 23034 * MiB, bf16=True),
        GPU("L40S", 46068 * MiB, bf16=True),
        GPU("A100-40GB", 40960 * MiB, bf16=True),
        GPU("A100-80GB", 81920 * MiB, bf16=True),
        GPU("H100-80GB", 81559 * MiB, bf16=True),
        GPU("H200", 143771 * MiB, bf16=True),
        GPU("B200", 183359 * MiB, bf16=True),
        GPU("A6000", 49140 * MiB, bf16=True),
        GPU("RTX6000-ADA", 49140 * MiB, bf16=True),
        GPU("RTX3090", 24576 * MiB, bf16=True),
        GPU("RTX4090", 24564 * MiB, bf16=True),
        GPU("RTX5090", 32607 * MiB, bf16=True),
    ]
}

ALIASES = {"H100": "H100-80GB", "RTXA6000": "A6000", "3090": "RTX3090", "4090": "RTX4090", "5090": "RTX5090"}

_UNITS = {
    "": GiB,
    "b": 1,
    "k": 1 << 10,
    "kb": 10**3,
    "kib": 1 << 10,
    "m": MiB,
    "mb": 10**6,
    "mib": MiB,
    "g": GiB,
    "gb": 10**9,
    "gib": GiB,
    "t": 1 << 40,
    "tb": 10**12,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _key(name: str) -> str:
    """Spelling-insensitive form: `NVIDIA GeForce RTX 4090` and `rtx-4090` both give `RTX4090`."""
    key = re.sub(r"[\s_\-]", "", name.upper())
    for noise in ("NVIDIA", "GEFORCE", "TESLA"):
        key = key.replace(noise, "")
    return key


_BY_KEY = {_key(n): g for n, g in KNOWN_GPUS.items()} | {_key(a): KNOWN_GPUS[n] for a, n in ALIASES.items()}


def parse_size(text: str) -> int | None:
    """`24GiB`, `24GB`, `24576MiB`, `24` (GiB) → bytes; None when `text` is not a size."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def lookup_gpu(name: str) -> GPU | None:
    """The known GPU a device or user-given name refers to, if any."""
    return _BY_KEY.get(_key(name))


def resolve_target(text: str) -> GPU:
    """`--gpu-memory`: a size or a known GPU name → the device to plan for; anything else is a ConfigError."""
    size = parse_size(text)
    if size is not None:
        if size <= 0:
            raise ConfigError(f"--gpu-memory must be positive, got '{text}'")
        return GPU(f"{size / GiB:.4g} GiB", size, bf16=True)
    gpu = lookup_gpu(text)
    if gpu is None:
        known = ", ".join(KNOWN_GPUS)
        raise ConfigError(f"--gpu-memory: unknown GPU '{text}' (known: {known}; or a size such as 24GiB)")
    return gpu
