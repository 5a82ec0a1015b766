"""`detrdoctor memprofile`: GPU memory and speed of DETR training steps across batch sizes and AMP modes,
measured on a GPU and estimated without one.

Collect (plan → sweep), judge (summary), render (report). Nothing here imports torch at module level.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from detrdoctor.memprofile.plan import Plan

BUSY_FRACTION = 0.5  # a GPU with less than this share free at the start is "mostly used" by others


def run_memprofile(options: dict[str, Any]) -> int:
    """The command: options as cli.py passes them. OOM points are results, so the exit code is 0."""
    import torch
    from rich.console import Console

    from detrdoctor.memprofile.plan import make_plan
    from detrdoctor.memprofile.report import render_json, render_text, write_csv
    from detrdoctor.memprofile.shapes import resolve_shape
    from detrdoctor.memprofile.summary import Summary
    from detrdoctor.memprofile.sweep import Sweep, progress_bar

    plan = make_plan(options)
    shape = resolve_shape(plan.shape_option, plan.cfg, max(plan.batch_sizes))
    err = Console(stderr=True, highlight=False)
    warnings = _busy_warning(plan)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}")

    snapshot_path = None
    if plan.snapshot:
        plan.output_dir.mkdir(parents=True, exist_ok=True)
        snapshot_path = str(plan.output_dir / "memory_snapshot.pickle")
    with progress_bar(err) as progress:
        sweep = Sweep(plan, shape, progress)
        searches, snapshot = sweep.run(snapshot_path)
    if snapshot is None or snapshot.status != "ok":
        snapshot_path = None

    summary = Summary(profile=plan.profile, shape=shape, device=_device_facts(plan, torch.__version__),
                      target=plan.target, safety_margin=plan.safety_margin, results=sweep.results,
                      amp_modes=plan.amp_modes, searches=searches, warnings=warnings, notes=_notes(plan),
                      snapshot_path=snapshot_path)
    if plan.output_dir is not None:
        write_csv(summary, plan.output_dir / "memprofile.csv")
    if plan.json_output:
        sys.stdout.write(render_json(summary) + "\n")
    else:
        render_text(summary, Console(highlight=False))
    return 0


def _busy_warning(plan: Plan) -> list[str]:
    gpu = plan.gpu
    if gpu is None or gpu.free_bytes is None or gpu.free_bytes >= BUSY_FRACTION * gpu.total_bytes:
        return []
    return [f"{gpu.name} had only {gpu.free_bytes / 2**30:.1f} of {gpu.total_bytes / 2**30:.1f} GiB free at the start: "
            "other processes are using it, so points may run out of memory early"]


def _device_facts(plan: Plan, torch_version: str) -> dict[str, Any]:
    if plan.gpu is not None:
        g = plan.gpu
        return {"type": "cuda", "name": g.name, "index": g.index, "total_bytes": g.total_bytes,
                "free_bytes_at_start": g.free_bytes, "torch": torch_version,
                "description": f"{g.name} (cuda:{g.index}, {g.total_bytes / 2**30:.1f} GiB)"
                + (", with estimates" if plan.estimate else "")}
    if plan.device == "cpu":
        return {"type": "cpu", "name": platform.processor() or platform.machine(), "torch": torch_version,
                "description": "CPU, measured (peak: live tensor bytes; device total: the process's peak RSS)"
                + (", with estimates for CUDA" if plan.estimate else "")}
    return {"type": "none", "name": None, "torch": torch_version,
            "description": "no GPU — estimated for CUDA from a FakeTensor trace of the step"}


def _notes(plan: Plan) -> list[str]:
    notes = []
    if plan.estimate:
        notes.append("Estimates count tensors, the caching allocator's rounding and segments, cuBLAS workspaces "
                     "and ~500 MiB of CUDA context; not cuDNN's convolution workspaces or the GradScaler's scalars.")
        if plan.cfg.train.channels_last:
            notes.append("channels_last changes layouts, not sizes: estimated as contiguous.")
    return notes
