"""What a process can learn about a GPU from NVML and the CUDA runtime, without creating a CUDA context
in the parent (a context there would take device memory away from the points it measures)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    total_bytes: int
    free_bytes: int | None  # at the start, from NVML; None when NVML cannot tell
    bf16: bool


def cuda_device(index: int) -> CudaDevice:
    """Name, memory and bf16 support of visible GPU `index`; free memory from NVML when it answers."""
    import torch

    props = torch.cuda.get_device_properties(index)
    free = _nvml(index, lambda nvml, handle: nvml.nvmlDeviceGetMemoryInfo(handle).free)
    return CudaDevice(index, props.name, props.total_memory, free, props.major >= 8)


def device_used_bytes(index: int) -> int | None:
    """The device's used memory now, all processes together (NVML)."""
    return _nvml(index, lambda nvml, handle: nvml.nvmlDeviceGetMemoryInfo(handle).used)


def process_device_bytes(index: int, baseline_used: int | None) -> int | None:
    """Device memory this process uses, CUDA context included: NVML's per-process figure where the
    driver gives it (not inside some containers), else the growth of the device's used memory since
    `baseline_used` (other processes assumed steady)."""

    def read(nvml: Any, handle: Any) -> int | None:
        for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory:
                return proc.usedGpuMemory
        used = nvml.nvmlDeviceGetMemoryInfo(handle).used
        return used - baseline_used if baseline_used is not None else None

    return _nvml(index, read)


def _nvml(index: int, read: Callable[[Any, Any], int | None]) -> int | None:
    """`read(pynvml, handle)` for visible GPU `index` (matched by UUID: NVML ignores CUDA_VISIBLE_DEVICES)."""
    try:
        import pynvml
        import torch

        uuid = str(torch.cuda.get_device_properties(index).uuid)
        pynvml.nvmlInit()
        try:
            value = read(pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"))
            return None if value is None else int(value)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver or NVML: the figures it gives are optional
        return None
