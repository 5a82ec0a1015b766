"""loader-bench's parts: DataLoader throughput per num_workers and pin_memory, and whether the model starves.

Collect (here and measure.py, stages.py) → judge (verdict.py) → render (render.py); the command is
`detrdoctor.commands.loader_bench`. Nothing here imports torch at module level.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from detr.config import device_batch_size
from detr.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from detr.config import RunConfig
    from detrdoctor.loaderbench.options import LoaderBenchOptions
    from detrdoctor.loaderbench.render import Report

PIN_CHOICES = {"both": (False, True), "on": (True,), "off": (False,)}


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_worker_counts(cpu_count: int) -> list[int]:
    """0, 1, 2, 4, … doubling while below the CPU count, then the CPU count itself."""
    counts, n = [0], 1
    while n < cpu_count:
        counts.append(n)
        n *= 2
    return counts + [max(cpu_count, 1)]


def parse_worker_counts(text: str, cpu_count: int) -> list[int]:
    """`auto` or comma-separated non-negative integers → sorted distinct worker counts."""
    if text.strip().lower() == "auto":
        return auto_worker_counts(cpu_count)
    counts = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit():
            raise ConfigError(
                f"--num-workers: '{part}' is not a worker count (use non-negative integers such as 0,2,4, or auto)"
            )
        counts.add(int(part))
    return sorted(counts)


def parse_step_time(text: str) -> float | str | None:
    """`auto` (measure), `none` (skip) or seconds per training step."""
    value = text.strip().lower()
    if value in ("auto", "none"):
        return None if value == "none" else "auto"
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"--step-time: '{text}' is not auto, none or a positive number of seconds")
    return seconds


@dataclass
class Collected:
    """What the measurements produced, before any judgement."""

    setup: dict[str, Any]
    results: list[Any]  # SettingResult
    step_time_s: float | None
    step_time_source: str  # measured | given | none
    model_device: str
    has_gpu: bool
    notes: list[str] = field(default_factory=list)


def collect(
    cfg: RunConfig,
    options: LoaderBenchOptions,
    worker_counts: list[int],
    step_time: float | str | None,
    console: Console,
) -> Collected:
    """Build the dataset, then run the sweep and the step timing under a progress bar."""
    import torch

    from detr.data import build_dataset, dataset_root
    from detr.engine.device import resolve_device
    from detrdoctor.loaderbench.measure import BenchOptions, measure_step_time, run_sweep
    from detrdoctor.progress_bar import progress_bar

    has_gpu = torch.cuda.is_available()
    pins = PIN_CHOICES[options.pin_memory] if has_gpu else (False,)
    settings = [(n, pin) for n in worker_counts for pin in pins]
    split = options.split
    opts = BenchOptions(
        batch_size=device_batch_size(cfg.train),
        batches=options.batches,
        train=split == "train",
        seed=cfg.train.seed,
        prefetch_factor=options.prefetch_factor,
        persistent_workers=options.persistent_workers,
    )
    if step_time == "auto":
        model_device = str(resolve_device(cfg.train.device))  # a GPU profile without a GPU fails before the sweep
    else:
        model_device = cfg.train.device.replace("auto", "cuda" if has_gpu else "cpu")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    seconds, source = (step_time, "given") if isinstance(step_time, float) else (None, "none")
    notes = []
    with progress_bar(console, label="[progress.description]{task.description}") as progress:
        if not cfg.data.coco_path:
            gen = progress.add_task("synthetic dataset (first use only)", total=None)
            dataset_root(cfg.data, lambda done, total: progress.update(gen, completed=done, total=total))
            progress.remove_task(gen)
        dataset = build_dataset(cfg.data, split, train=opts.train, seed=cfg.train.seed)
        task = progress.add_task(_setting_name(*settings[0]), total=len(settings) + (step_time == "auto"))
        following = iter(
            [_setting_name(*s) for s in settings[1:]] + ["model step time" if step_time == "auto" else "done"]
        )

        def advance(result: Any) -> None:  # noqa: ARG001 - run_sweep's callback signature
            progress.update(task, advance=1, description=next(following))

        device = torch.device("cuda", torch.cuda.current_device()) if has_gpu else None
        results = run_sweep(dataset, cfg.data, opts, settings, device, on_result=advance)
        if step_time == "auto":
            try:
                seconds, model_device = measure_step_time(cfg, dataset)
                source = "measured"
            except torch.OutOfMemoryError:
                notes.append(
                    f"the model ran out of memory on {model_device} at batch size {opts.batch_size}: "
                    "no step time (try a smaller --batch-size, or give --step-time SECONDS)"
                )
            progress.advance(task)

    setup = {
        "profile": options.profile,
        "dataset": cfg.data.coco_path or "synthetic",
        "split": split,
        "images": len(dataset),
        "batch_size": opts.batch_size,
        "timed_batches": opts.batches,
        "budget_s": opts.budget_s,
        "prefetch_factor": opts.prefetch_factor or 2,
        "persistent_workers": opts.persistent_workers,
        "cpu_count": usable_cpus(),
        "load_average": round(load, 2),
        "gpu": torch.cuda.get_device_name() if has_gpu else None,
        "num_workers": worker_counts,
    }
    return Collected(setup, results, seconds, source, model_device, has_gpu, notes)


def judge(collected: Collected) -> Report:
    """Starvation per setting, the recommendation, and the caveats a reader needs to trust the numbers."""
    from detrdoctor.loaderbench.render import Report
    from detrdoctor.loaderbench.verdict import judge_starvation, recommend

    c = collected
    cpu_count = c.setup["cpu_count"]
    starvation = judge_starvation(c.results, c.step_time_s, c.step_time_source, c.model_device)
    recommendation = recommend(c.results, starvation, cpu_count, c.has_gpu)
    notes = list(c.notes)
    load = c.setup["load_average"]
    if load > 0.5 * cpu_count:
        notes.append(
            f"the load average was {load:.1f} on {cpu_count} CPUs before the sweep: other processes "
            "compete for the CPU, so rates are lower and noisier than on an idle machine"
        )
    if not c.has_gpu:
        notes.append("no GPU: pin_memory has no effect, so only pin_memory off was measured")
    if c.step_time_s is not None and c.model_device == "cpu":
        notes.append(
            "the model runs on the CPU: in training it shares the cores with the workers, "
            "so both rates are upper bounds"
        )
    return Report(setup=c.setup, results=c.results, starvation=starvation, recommendation=recommendation, notes=notes)


def _setting_name(num_workers: int, pin: bool) -> str:
    return f"num_workers={num_workers} pin_memory={'on' if pin else 'off'}"
