"""`detrdoctor memprofile`: memory and speed per batch size and AMP mode, measured on a GPU, estimated without one."""

from __future__ import annotations

import sys

from detrdoctor.memprofile.options import MemprofileOptions


def run_memprofile(options: MemprofileOptions) -> int:
    """GPU memory and speed across batch sizes, with and without AMP (estimated without a GPU).

    Out-of-memory points are results, so the exit code is 0.
    """
    import torch
    from rich.console import Console

    from detrdoctor.memprofile import busy_warnings, device_facts, estimate_notes
    from detrdoctor.memprofile.plan import make_plan
    from detrdoctor.memprofile.render import render_json, render_text, write_csv
    from detrdoctor.memprofile.shapes import resolve_shape
    from detrdoctor.memprofile.summary import Summary
    from detrdoctor.memprofile.sweep import Sweep
    from detrdoctor.progress_bar import progress_bar

    plan = make_plan(options)
    shape = resolve_shape(plan.shape_option, plan.cfg, max(plan.batch_sizes))
    err = Console(stderr=True, highlight=False)
    warnings = busy_warnings(plan)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}")

    snapshot_path = None
    if plan.snapshot:
        assert plan.output_dir is not None  # checked with the options
        plan.output_dir.mkdir(parents=True, exist_ok=True)
        snapshot_path = str(plan.output_dir / "memory_snapshot.pickle")
    with progress_bar(err) as progress:
        sweep = Sweep(plan, shape, progress)
        searches, snapshot = sweep.run(snapshot_path)
    if snapshot is None or snapshot.status != "ok":
        snapshot_path = None

    summary = Summary(
        profile=plan.profile,
        shape=shape,
        device=device_facts(plan, torch.__version__),
        target=plan.target,
        safety_margin=plan.safety_margin,
        results=sweep.results,
        amp_modes=plan.amp_modes,
        searches=searches,
        warnings=warnings,
        notes=estimate_notes(plan),
        snapshot_path=snapshot_path,
    )
    if plan.output_dir is not None:
        write_csv(summary, plan.output_dir / "memprofile.csv")
    if plan.json_output:
        sys.stdout.write(render_json(summary) + "\n")
    else:
        render_text(summary, Console(highlight=False))
    return 0
