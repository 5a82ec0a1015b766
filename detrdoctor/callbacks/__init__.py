"""What `train` attaches to the training loop, and the one place that fixes their order.

- progress.py     plain log lines (non-terminals, CI, ranks other than 0)
- tensorboard.py  `--tensorboard`: metrics.jsonl's records, also as TensorBoard scalars
- stall.py        no step for too long: py-spy stacks of every process, optionally a stop
- flamegraph.py   `--profile-cpu STEPS`: a py-spy flame graph of a window of steps
- data_gate.py    the dataset doctor's verdict before training: failures stop, warnings become events

The gradient watchdog (detrdoctor/watchdog/) and the live dashboard (detrdoctor/dashboard/) are callbacks too,
in packages of their own; `build_callbacks` below attaches them all.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from detr.config import RunConfig
    from detr.engine.callbacks import Callback


def build_callbacks(cfg: RunConfig, profile: str = "", data_gate: Callback | None = None) -> list[Callback]:
    """The diagnostics attached to a `train` run, in the order their hooks run (the one place that fixes it)."""
    from rich.console import Console

    from detrdoctor.callbacks.stall import StallDetector

    diagnostics = cfg.diagnostics
    callbacks: list[Callback] = []
    if cfg.watchdog.enabled:  # first: it may veto the optimizer step, and the displays then show its verdict
        from detrdoctor.watchdog import GradientWatchdog

        callbacks.append(GradientWatchdog(cfg.watchdog))
    callbacks.append(progress_display(Console(highlight=False), diagnostics.dashboard, profile))
    if diagnostics.stall_after > 0:
        # The first step also waits for worker start-up and compilation: it gets at least five minutes.
        callbacks.append(
            StallDetector(
                min_limit_s=diagnostics.stall_after,
                first_step_limit_s=max(diagnostics.stall_after, 300.0),
                on_stall=diagnostics.on_stall,
            )
        )
    if diagnostics.profile_cpu:
        from detrdoctor.callbacks.flamegraph import CpuProfiler

        callbacks.append(CpuProfiler(diagnostics.profile_cpu))
    if diagnostics.tensorboard:
        from detrdoctor.callbacks.tensorboard import TensorBoardWriter

        callbacks.append(TensorBoardWriter())
    if data_gate is not None:  # last: its warnings become events once the displays are listening
        callbacks.append(data_gate)
    return callbacks


def progress_display(console: Console, dashboard: bool, profile: str = "") -> Callback:
    """The live dashboard on rank 0 of an interactive terminal; plain log lines otherwise."""
    from detrdoctor.callbacks.progress import PlainProgress

    rank = int(os.environ.get("RANK", "0"))  # torchrun's; the trainer is not built yet
    # isatty too: FORCE_COLOR (common in CI) makes rich call any stream a terminal, and Live would flood the log
    interactive = sys.stdout.isatty() and console.is_terminal and not console.is_dumb_terminal
    if interactive and dashboard and rank == 0:
        from detrdoctor.dashboard import Dashboard

        return Dashboard(console, profile=profile)
    return PlainProgress(console)
