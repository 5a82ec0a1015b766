"""`detrdoctor loader-bench`: DataLoader throughput per num_workers and pin_memory, and whether the model starves."""

from __future__ import annotations

from detrdoctor.loaderbench.options import LoaderBenchOptions


def check_options(options: LoaderBenchOptions) -> None:
    """Reject impossible flag values before any work starts."""
    from detr.errors import ConfigError
    from detrdoctor.loaderbench import PIN_CHOICES

    if options.split not in ("train", "val"):
        raise ConfigError(f"--split must be train or val, got '{options.split}'")
    if options.pin_memory not in PIN_CHOICES:
        raise ConfigError(f"--pin-memory must be both, on or off, got '{options.pin_memory}'")
    if options.batches < 3:
        raise ConfigError(f"--batches must be at least 3 (the spread needs several windows), got {options.batches}")
    if options.prefetch_factor is not None and options.prefetch_factor < 1:
        raise ConfigError(f"--prefetch-factor must be at least 1, got {options.prefetch_factor}")


def run_loader_bench(options: LoaderBenchOptions) -> int:
    """DataLoader throughput per num_workers and pin_memory, with a verdict on GPU starvation.

    Exit 0 when at least one setting was measured, 1 when every setting crashed.
    """
    from rich.console import Console

    from detr.data import resolve_num_classes
    from detrdoctor.loaderbench import collect, judge, parse_step_time, parse_worker_counts, usable_cpus
    from detrdoctor.loaderbench.render import dumps, render
    from detrdoctor.options import config_overrides
    from detrdoctor.runconfig import announce_layout, load_run_config

    check_options(options)
    worker_counts = parse_worker_counts(options.num_workers, usable_cpus())
    step_time = parse_step_time(options.step_time)
    cfg = load_run_config(options.profile, options.coco_path, config_overrides(options))
    announce_layout(cfg)
    resolve_num_classes(cfg)  # the step timing builds the model
    out = Console(highlight=False)
    collected = collect(
        cfg, options, worker_counts, step_time, Console(stderr=True, highlight=False) if options.json_output else out
    )
    report = judge(collected)
    if options.json_output:
        print(dumps(report))
    else:
        render(report, out)
    return 0 if report.recommendation.num_workers is not None else 1
