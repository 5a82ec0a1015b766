"""`detrdoctor train`: resolve the configuration, attach the diagnostics, train."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from detr.config import RunConfig
    from detr.engine.callbacks import Callback


@dataclass
class TrainOptions:
    """The flags of `train`; None means "not given": the profile (or the resumed run) decides."""

    profile: str | None
    coco_path: str | None
    output_dir: str | None
    epochs: int | None
    max_steps: int | None
    batch_size: int | str | None  # an int or "auto"
    effective_batch: int | None
    gpu_memory: str | None  # the memory `--batch-size auto` plans for (a size or a GPU name)
    lr: float | None
    lr_backbone: float | None
    clip_max_norm: float | None
    ema_decay: float | None
    amp: str | None
    device: str | None
    num_workers: int | None
    resume: str | None
    weights: str | None
    backbone_weights: str | None
    seed: int | None
    eval_every: int | None
    log_every: int | None
    on_anomaly: str | None
    dashboard: bool | None
    profile_cpu: int | None
    stall_after: float | None
    on_stall: str | None
    tensorboard: bool | None
    train_annotations: str | None
    val_annotations: str | None
    train_images: str | None
    val_images: str | None
    overwrite: bool = False

    def overrides(self) -> dict[str, dict[str, Any]]:
        """The flags as config keys, per section."""
        from detrdoctor.commands.common import data_flags

        train_keys = (
            "output_dir",
            "epochs",
            "max_steps",
            "batch_size",
            "effective_batch",
            "lr",
            "lr_backbone",
            "clip_max_norm",
            "ema_decay",
            "amp",
            "device",
            "resume",
            "weights",
            "seed",
            "eval_every",
            "log_every",
        )
        train = {key: getattr(self, key) for key in train_keys}
        if isinstance(self.batch_size, str) and self.batch_size.strip().isdigit():  # the flag is text: N or auto
            train["batch_size"] = int(self.batch_size)
            if train["batch_size"] < 1:
                from detr.errors import ConfigError

                raise ConfigError(f'batch size must be "auto" or at least 1, got {self.batch_size} (--batch-size)')
        return {
            "model": {"backbone_weights": self.backbone_weights},
            "data": {"num_workers": self.num_workers, **data_flags(self)},
            "train": train,
            "watchdog": {"on_anomaly": self.on_anomaly},
            "diagnostics": {
                "dashboard": self.dashboard,
                "profile_cpu": self.profile_cpu,
                "stall_after": self.stall_after,
                "on_stall": self.on_stall,
                "tensorboard": self.tensorboard,
            },
        }


def resolve_train_config(options: TrainOptions) -> RunConfig:
    """The profile with the flags applied; `--resume` without `--profile` continues with the run's own config.

    `--resume auto` (with --output-dir) and `--resume RUN_DIR` continue from the folder's checkpoint, or start
    fresh there when it has none. A resumed run writes into its checkpoint's folder (or --output-dir): never
    where the run's config.toml or the checkpoint's args say, which may be another run's folder.
    """
    from dataclasses import replace

    from detr.config import validate
    from detr.engine.checkpointing import resolve_resume
    from detrdoctor.commands.common import apply_flags, load_run_config, with_coco_path

    resume, run_dir = resolve_resume(options.resume or "", options.output_dir or "")
    options = replace(options, resume=resume or None, output_dir=run_dir or None)
    if options.resume and not options.profile:
        cfg = config_of_run(options.resume)
        if cfg is not None:
            cfg.train.weights = ""  # the checkpoint carries the weights the run had reached
            cfg.train.output_dir = ""  # the folder of the checkpoint (or --output-dir), below
            apply_flags(cfg, with_coco_path(options.overrides(), options.coco_path))
            validate(cfg)
            return cfg
    return load_run_config(options.profile, options.coco_path, options.overrides())


def config_of_run(checkpoint: str) -> RunConfig | None:
    """A run's configuration: the `config.toml` beside its checkpoint, else the checkpoint's own `args`.

    None for a checkpoint that holds neither (an official one): the profile then decides.
    """
    from detr.config import load_config_file

    beside = Path(checkpoint).expanduser().parent / "config.toml"
    if beside.is_file():
        return load_config_file(beside)
    from detr.checkpoint import load_checkpoint_file

    return config_of_checkpoint(load_checkpoint_file(checkpoint), checkpoint)


def config_of_checkpoint(ckpt: dict[str, Any], source: str) -> RunConfig | None:
    """The RunConfig a checkpoint of ours was trained with (its `args`), or None for other checkpoints."""
    from detr.config import config_from_dict

    args = ckpt.get("args")
    if isinstance(args, dict) and "model" in args:
        return config_from_dict({k: v for k, v in args.items() if k != "description"}, f"{source} (args)")
    return None


def run_train(options: TrainOptions) -> int:
    """`detrdoctor train`: exit 0 when done, 130 when stopped by Ctrl-C, 75 when preempted (SIGTERM, SIGUSR1),
    another non-zero code when a diagnostic stopped the run."""
    from detr.config import AUTO, validate
    from detr.engine.trainer import Trainer
    from detrdoctor.commands.common import default_profile
    from detrdoctor.memprofile.auto import BatchAdvice, resolve_auto_batch

    cfg = resolve_train_config(options)
    profile = Path(default_profile(options.profile, options.coco_path)).stem
    data_check, train_images = check_data(cfg, options.profile)
    callbacks = [*build_callbacks(cfg, profile), data_check]
    choice = None
    if cfg.train.batch_size == AUTO:  # resolved before the trainer is built: config.toml records the int
        from detrdoctor.auto_batch import AutoBatchEvent

        choice = resolve_auto_batch(cfg, options.gpu_memory, train_images)
        validate(cfg)
        callbacks.append(AutoBatchEvent(choice))
    trainer = Trainer(
        cfg,
        callbacks=callbacks,
        batch_advisor=BatchAdvice(cfg, options.gpu_memory, choice),
        overwrite=options.overwrite,
    )
    return trainer.fit()["exit_code"]


def check_data(cfg: RunConfig, profile: str | None) -> tuple[Callback, int]:
    """Before anything is written: the layout found, num_classes resolved, and the dataset doctor's verdict.

    A failed check stops here in one line; the warnings become `data_check` events of the run. Also returns
    the number of training images.
    """
    from detr.data import resolve_num_classes
    from detrdoctor.commands.common import announce_layout, env_check_command
    from detrdoctor.data_check import DataCheckEvents, stop_on_failures
    from detrdoctor.datadoctor.doctor import collect_splits, judge_dataset

    announce_layout(cfg)
    resolve_num_classes(cfg)
    train, val = collect_splits(cfg, 32)
    rows = judge_dataset(train, val, cfg)
    stop_on_failures(rows, env_check_command(cfg, profile))
    return DataCheckEvents(rows), len(train.images)


def build_callbacks(cfg: RunConfig, profile: str = "") -> list[Callback]:
    """The diagnostics attached to a `train` run, in the order their hooks run."""
    from rich.console import Console

    from detrdoctor.stall import StallDetector

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
        from detrdoctor.flamegraph import CpuProfiler

        callbacks.append(CpuProfiler(diagnostics.profile_cpu))
    if diagnostics.tensorboard:
        from detrdoctor.tensorboard import TensorBoardWriter

        callbacks.append(TensorBoardWriter())
    return callbacks


def progress_display(console: Console, dashboard: bool, profile: str = "") -> Callback:
    """The live dashboard on rank 0 of an interactive terminal; plain log lines otherwise."""
    from detrdoctor.progress import PlainProgress

    rank = int(os.environ.get("RANK", "0"))  # torchrun's; the trainer is not built yet
    # isatty too: FORCE_COLOR (common in CI) makes rich call any stream a terminal, and Live would flood the log
    interactive = sys.stdout.isatty() and console.is_terminal and not console.is_dumb_terminal
    if interactive and dashboard and rank == 0:
        from detrdoctor.dashboard import Dashboard

        return Dashboard(console, profile=profile)
    return PlainProgress(console)
