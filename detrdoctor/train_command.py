"""The bodies of `train`, `evaluate`, `profiles` and `synth`: resolve options, call the library, report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from detr.config import RunConfig
from detr.errors import ConfigError

# CLI option → (config section, key); options not listed here are not configuration.
OPTION_KEYS = {
    "coco_path": ("data", "coco_path"),
    "num_workers": ("data", "num_workers"),
    "backbone_weights": ("model", "backbone_weights"),
    "on_anomaly": ("watchdog", "on_anomaly"),
    **{name: ("train", name) for name in (
        "output_dir", "epochs", "max_steps", "batch_size", "lr", "lr_backbone", "clip_max_norm", "ema_decay", "amp",
        "device", "resume", "weights", "seed", "eval_every", "log_every")},
}


def profile_name(options: dict[str, Any]) -> str:
    """--profile, else detr-r50 for a real dataset (--coco-path), else the synthetic demo."""
    return options.get("profile") or ("detr-r50" if options.get("coco_path") else "demo")


def resolve_config(options: dict[str, Any]) -> RunConfig:
    """Profile values, overridden by the command-line flags that were given."""
    from detr.config import validate
    from detrdoctor.profiles import load_profile

    cfg = load_profile(profile_name(options))
    for option, (section, key) in OPTION_KEYS.items():
        value = options.get(option)
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    validate(cfg)
    return cfg


def run_train(options: dict[str, Any]) -> int:
    """`detrdoctor train`: exit 0 when done, 130 when stopped by Ctrl-C."""
    from detr.engine.trainer import Trainer

    cfg = resolve_config(options)
    trainer = Trainer(cfg, callbacks=build_callbacks(cfg, options))
    return trainer.fit()["exit_code"]


def build_callbacks(cfg: RunConfig, options: dict[str, Any]) -> list:
    """The diagnostics attached to a `train` run, in the order their hooks run."""
    from detrdoctor.stall import ON_STALL, StallDetector

    stall_after, on_stall = options.get("stall_after", 60.0), options.get("on_stall", "wait")
    if on_stall not in ON_STALL:
        raise ConfigError(f"--on-stall must be {' or '.join(ON_STALL)}, got '{on_stall}'")
    if stall_after < 0:
        raise ConfigError(f"--stall-after must be ≥ 0 seconds (0 turns stall detection off), got {stall_after}")
    callbacks: list = []
    if cfg.watchdog.enabled:  # first: it may veto the optimizer step, and the displays then show its verdict
        from detrdoctor.watchdog import GradientWatchdog

        callbacks.append(GradientWatchdog(cfg.watchdog))
    callbacks.append(progress_display(options, Console(highlight=False)))
    if stall_after > 0:
        # The first step also waits for worker start-up and compilation: it gets at least five minutes.
        callbacks.append(StallDetector(min_limit_s=stall_after, first_step_limit_s=max(stall_after, 300.0),
                                       on_stall=on_stall))
    if options.get("profile_cpu"):
        from detrdoctor.flamegraph import CpuProfiler

        callbacks.append(CpuProfiler(options["profile_cpu"]))
    return callbacks


def progress_display(options: dict[str, Any], console: Console):
    """The live dashboard on rank 0 of an interactive terminal; plain log lines otherwise."""
    from detrdoctor.progress import PlainProgress

    rank = int(os.environ.get("RANK", "0"))  # torchrun's; the trainer is not built yet
    # isatty too: FORCE_COLOR (common in CI) makes rich call any stream a terminal, and Live would flood the log
    interactive = sys.stdout.isatty() and console.is_terminal and not console.is_dumb_terminal
    if interactive and not options.get("no_dashboard") and rank == 0:
        from detrdoctor.dashboard import Dashboard

        return Dashboard(console, profile=Path(profile_name(options)).stem)
    return PlainProgress(console)


def config_for_weights(weights: str, profile: str | None) -> tuple[RunConfig, dict]:
    """The config to evaluate `weights` with: the profile if given, else the checkpoint's own."""
    from detr import infer_config_from_state_dict
    from detr.checkpoint import load_checkpoint_file
    from detr.config import config_from_dict
    from detrdoctor.profiles import load_profile

    ckpt = load_checkpoint_file(weights)
    if profile:
        return load_profile(profile), ckpt
    args = ckpt.get("args")
    if isinstance(args, dict) and "model" in args:
        return config_from_dict({k: v for k, v in args.items() if k != "description"}, f"{weights} (args)"), ckpt
    cfg = load_profile("detr-r50")
    state_dict = ckpt.get("model", ckpt)
    for key, value in infer_config_from_state_dict(state_dict).items():
        if hasattr(cfg.model, key):
            setattr(cfg.model, key, value)
    return cfg, ckpt


def run_evaluate(options: dict[str, Any]) -> int:
    """`detrdoctor evaluate`: COCO box AP of a checkpoint."""
    import torch

    from detr import build_model
    from detr.checkpoint import load_state_dict_into, model_state_dict
    from detr.data import build_dataset, check_dataset
    from detr.engine.device import resolve_device
    from detr.engine.evaluate import coco_box_stats, predict_detections
    from detr.engine.loaders import build_eval_loader

    cfg, ckpt = config_for_weights(options["weights"], options.get("profile"))
    for option, section, key in (("coco_path", "data", "coco_path"), ("batch_size", "train", "batch_size"),
                                 ("device", "train", "device"), ("num_workers", "data", "num_workers")):
        if options.get(option) is not None:
            setattr(getattr(cfg, section), key, options[option])
    cfg.model.backbone_weights = "none"  # the checkpoint carries the backbone
    device = resolve_device(cfg.train.device)
    check_dataset(cfg.data, "val")
    dataset = build_dataset(cfg.data, "val", train=False)
    model, _, postprocessor = build_model(cfg.model)
    load_state_dict_into(model, model_state_dict(ckpt, options["weights"]), options["weights"])
    ema = "model_ema" in ckpt  # a run trained with a weight average is scored by it, as during training
    model.to(device)
    loader = build_eval_loader(dataset, cfg.data, cfg.train.batch_size, device=device)
    with torch.inference_mode():
        detections, image_ids = predict_detections(model, postprocessor, loader, device)
    stats = coco_box_stats(dataset.coco, detections, image_ids)
    breakdown = None
    if options.get("breakdown"):
        from detr.engine.error_breakdown import error_breakdown
        from detrdoctor.ap_breakdown import judge_breakdown

        with Console(stderr=True).status("re-scoring the detections at 5 IoU thresholds and without labels"):
            breakdown = error_breakdown(dataset.coco, detections, image_ids)
        breakdown["findings"] = judge_breakdown(breakdown)
    if options.get("json_output"):
        extra = {} if breakdown is None else {"breakdown": breakdown}
        print(json.dumps({"weights": options["weights"], "ema": ema, "images": len(dataset), **stats, **extra}))
        return 0
    console = Console()
    which = " (its EMA weights)" if ema else ""
    table = Table(title=f"COCO box AP — {options['weights']}{which} on {len(dataset)} images")
    for name in stats:
        table.add_column(name, justify="right")
    table.add_row(*("—" if v is None else f"{v:.3f}" for v in stats.values()))
    console.print(table)
    if breakdown is not None:
        from detrdoctor.ap_breakdown import render_breakdown

        render_breakdown(console, breakdown)
    return 0


def run_list_profiles(json_output: bool) -> int:
    """`detrdoctor profiles`: one line per preset."""
    from detrdoctor.profiles import available_profiles, profile_summaries

    summaries = profile_summaries()
    if json_output:
        paths = available_profiles()
        print(json.dumps([{"name": n, "description": d, "path": str(paths[n])} for n, d in summaries.items()]))
        return 0
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("profile", style="cyan", no_wrap=True)
    table.add_column("description")
    for name, description in summaries.items():
        table.add_row(name, description)
    Console().print(table)
    return 0


def run_synth(out: str, train_images: int, val_images: int, image_size: int, seed: int) -> int:
    """`detrdoctor synth`: render the synthetic COCO dataset with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from detr.data import generate_synthetic_coco

    for flag, value, low in (("--train-images", train_images, 1), ("--val-images", val_images, 1),
                             ("--image-size", image_size, 32)):
        if value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    console = Console(stderr=True)
    with Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("synth", total=train_images + val_images)
        root = generate_synthetic_coco(out, train_images=train_images, val_images=val_images,
                                       image_size=image_size, seed=seed,
                                       progress=lambda done, total: progress.update(task, completed=done, total=total))
    Console().print(f"wrote {train_images} + {val_images} images and COCO annotations to [bold]{root}[/]")
    return 0
