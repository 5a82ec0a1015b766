"""Device and mixed-precision choices, checked before any work starts."""

from __future__ import annotations

import torch

from detr.errors import ConfigError

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """`auto` → the first GPU if there is one, else the CPU; `cuda` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (--device): use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA GPU is visible (try --device cpu, or run `detrdoctor env-check`)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device '{name}' (--device): use auto, cpu, cuda or cuda:N")
    return device


def resolve_amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `--amp`, refusing combinations the device cannot run."""
    if amp not in AMP_DTYPES:
        raise ConfigError(f"--amp must be off, bf16 or fp16, got '{amp}'")
    if amp == "fp16" and device.type == "cpu":
        raise ConfigError("--amp fp16 needs a CUDA GPU (its GradScaler is CUDA-only); use --amp bf16 or off on the CPU")
    if amp == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--amp bf16: {torch.cuda.get_device_name(device)} does not support bf16; use --amp fp16")
    return AMP_DTYPES[amp]
