"""memprofile's parts: GPU memory and speed of DETR training steps across batch sizes and AMP modes,
measured on a GPU and estimated without one.

Collect (plan → sweep), judge (summary), render (render); the command is `detrdoctor.commands.memprofile`.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import platform
from typing import Any

from detr.engine.device import cpu_bf16_features
from detrdoctor.memprofile.plan import Plan

BUSY_FRACTION = 0.5  # a GPU with less than this share free at the start is "mostly used" by others


def busy_warnings(plan: Plan) -> list[str]:
    gpu = plan.gpu
    if gpu is None or gpu.free_bytes is None or gpu.free_bytes >= BUSY_FRACTION * gpu.total_bytes:
        return []
    return [
        f"{gpu.name} had only {gpu.free_bytes / 2**30:.1f} of {gpu.total_bytes / 2**30:.1f} GiB free at the start: "
        "other processes are using it, so points may run out of memory early"
    ]


def device_facts(plan: Plan, torch_version: str) -> dict[str, Any]:
    if plan.gpu is not None:
        g = plan.gpu
        return {
            "type": "cuda",
            "name": g.name,
            "index": g.index,
            "total_bytes": g.total_bytes,
            "free_bytes_at_start": g.free_bytes,
            "torch": torch_version,
            "description": f"{g.name} (cuda:{g.index}, {g.total_bytes / 2**30:.1f} GiB)"
            + (", with estimates" if plan.estimate else ""),
        }
    if plan.device == "cpu":
        return {
            "type": "cpu",
            "name": platform.processor() or platform.machine(),
            "bf16": cpu_bf16_features(),
            "torch": torch_version,
            "description": "CPU, measured (peak: live tensor bytes; device total: the process's peak RSS)"
            + (", with estimates for CUDA" if plan.estimate else ""),
        }
    return {
        "type": "none",
        "name": None,
        "torch": torch_version,
        "description": "no GPU — estimated for CUDA from a FakeTensor trace of the step",
    }


def estimate_notes(plan: Plan) -> list[str]:
    notes = list(plan.notes)
    if plan.device == "cpu" and "bf16" in plan.amp_modes:
        features = cpu_bf16_features()
        notes.append(
            f"This CPU has {' and '.join(features)}: bf16 autocast runs natively, and its step time is the one to read."
            if features
            else "This CPU has no bf16 instructions (avx512_bf16, amx_bf16): bf16 is emulated, so its step is "
            "slower than fp32's; its memory is still what bf16 saves."
        )
    if plan.estimate:
        notes.append(
            "Estimates count tensors, the caching allocator's rounding and segments, cuBLAS workspaces "
            "and ~500 MiB of CUDA context; not cuDNN's convolution workspaces or the GradScaler's scalars."
        )
        if plan.cfg.train.channels_last:
            notes.append("channels_last changes layouts, not sizes: estimated as contiguous.")
    return notes
