"""`detrdoctor train`: resolve the configuration, attach the diagnostics, train."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from detrdoctor.options import (
    CONFIG,
    Amp,
    ConfigKey,
    DataRoot,
    Device,
    NumWorkers,
    Profile,
    TrainAnnotations,
    TrainImages,
    ValAnnotations,
    ValImages,
)

if TYPE_CHECKING:
    from detr.config import RunConfig
    from detr.engine.callbacks import Callback


def batch_size_value(text: str) -> int | str:
    """--batch-size: a whole number of images, or auto."""
    if text.strip().isdigit():
        if int(text) < 1:
            from detr.errors import ConfigError

            raise ConfigError(f'batch size must be "auto" or at least 1, got {text} (--batch-size)')
        return int(text)
    return text


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """The flags of `train`; None means "not given": the profile (or the resumed run) decides."""

    profile: Profile = None
    coco_path: DataRoot = None
    output_dir: Annotated[str | None, typer.Option(help="Run folder (default: runs/<timestamp>)."), CONFIG] = None
    epochs: Annotated[int | None, typer.Option(help="Number of epochs."), CONFIG] = None
    max_steps: Annotated[int | None, typer.Option(help="Stop when the global step count reaches N."), CONFIG] = None
    batch_size: Annotated[
        str | None,
        typer.Option(
            help="Images per forward pass (per process), or auto: the largest that fits the device with a 10% "
            "margin (memprofile: measured on a GPU, estimated without one)."
        ),
        ConfigKey(parse=batch_size_value),
    ] = None
    effective_batch: Annotated[
        int | None,
        typer.Option(help="Images per optimizer step (per process), accumulating gradients over --batch-size passes."),
        CONFIG,
    ] = None
    gpu_memory: Annotated[
        str | None,
        typer.Option(help="Memory --batch-size auto plans for: a size (24GiB) or a GPU name (default: the device's)."),
    ] = None
    lr: Annotated[float | None, typer.Option(help="Learning rate of the transformer and heads."), CONFIG] = None
    lr_backbone: Annotated[float | None, typer.Option(help="Learning rate of the backbone (0 freezes it)."), CONFIG] = (
        None
    )
    clip_max_norm: Annotated[float | None, typer.Option(help="Gradient clipping max norm (0 disables)."), CONFIG] = None
    ema_decay: Annotated[
        float | None, typer.Option(help="Evaluate and ship an EMA of the weights (e.g. 0.998; 0 disables)."), CONFIG
    ] = None
    amp: Amp = None
    device: Device = None
    num_workers: NumWorkers = None
    resume: Annotated[
        str | None,
        typer.Option(
            help="Continue exactly from a checkpoint, in its folder; a run folder or auto (the --output-dir): its "
            "checkpoint, or a fresh start when it has none yet."
        ),
        CONFIG,
    ] = None
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Start afresh in an --output-dir that holds a run (its checkpoint is replaced)."
        ),
    ] = False
    weights: Annotated[
        str | None, typer.Option(help="Load model weights only (path or URL; official checkpoints too)."), CONFIG
    ] = None
    backbone_weights: Annotated[
        str | None, typer.Option(help="imagenet, none or a path to a torchvision ResNet state_dict."), CONFIG
    ] = None
    seed: Annotated[int | None, typer.Option(help="Random seed."), CONFIG] = None
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate every N epochs (0: never during training)."), CONFIG
    ] = None
    log_every: Annotated[int | None, typer.Option(help="Write a step record every N steps."), CONFIG] = None
    on_anomaly: Annotated[
        str | None, typer.Option(help="Gradient watchdog action: warn, skip, rollback or stop."), CONFIG
    ] = None
    dashboard: Annotated[
        bool,
        typer.Option("--no-dashboard", help="Plain log lines instead of the live dashboard."),
        ConfigKey(when_on=False),
    ] = False
    profile_cpu: Annotated[
        int | None, typer.Option(help="Record a py-spy flame graph over this many steps."), CONFIG
    ] = None
    stall_after: Annotated[
        float | None,
        typer.Option(
            help="Seconds without a finished step (at least 10× the median step time) before the stacks are "
            "dumped; 0 turns stall detection off (profile default: 60)."
        ),
        CONFIG,
    ] = None
    on_stall: Annotated[
        str | None,
        typer.Option(help="After a stall dump: wait (keep going) or stop the run (profile default: wait)."),
        CONFIG,
    ] = None
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard",
            help="Also write scalars and events for TensorBoard into the run folder's tensorboard/ "
            "(pip install 'detrdoctor[tensorboard]').",
        ),
        CONFIG,
    ] = False
    train_annotations: TrainAnnotations = None
    val_annotations: ValAnnotations = None
    train_images: TrainImages = None
    val_images: ValImages = None


def resolve_train_config(options: TrainOptions) -> RunConfig:
    """The profile with the flags applied; `--resume` without `--profile` continues with the run's own config.

    `--resume auto` (with --output-dir) and `--resume RUN_DIR` continue from the folder's checkpoint, or start
    fresh there when it has none. A resumed run writes into its checkpoint's folder (or --output-dir): never
    where the run's config.toml or the checkpoint's args say, which may be another run's folder.
    """
    from dataclasses import replace

    from detr.config import validate
    from detr.engine.checkpointing import resolve_resume
    from detrdoctor.options import config_overrides
    from detrdoctor.runconfig import apply_flags, config_of_run, load_run_config

    resume, run_dir = resolve_resume(options.resume or "", options.output_dir or "")
    options = replace(options, resume=resume or None, output_dir=run_dir or None)
    if options.resume and not options.profile:
        cfg = config_of_run(options.resume)
        if cfg is not None:
            cfg.train.weights = ""  # the checkpoint carries the weights the run had reached
            cfg.train.output_dir = ""  # the folder of the checkpoint (or --output-dir), below
            apply_flags(cfg, config_overrides(options))
            validate(cfg)
            return cfg
    return load_run_config(options.profile, options.coco_path, config_overrides(options))


def run_train(options: TrainOptions) -> int:
    """Train DETR (default: the demo profile on the synthetic dataset, on the CPU).

    Exit 0 when done, 130 when stopped by Ctrl-C, 75 when preempted (SIGTERM, SIGUSR1), another non-zero code
    when a diagnostic stopped the run.
    """
    from detr.config import AUTO, validate
    from detr.engine.trainer import Trainer
    from detrdoctor.callbacks import build_callbacks
    from detrdoctor.memprofile.auto import BatchAdvice, resolve_auto_batch
    from detrdoctor.runconfig import default_profile

    cfg = resolve_train_config(options)
    profile = Path(default_profile(options.profile, options.coco_path)).stem
    data_check, train_images = check_data(cfg, options.profile)
    callbacks = build_callbacks(cfg, profile, data_check)
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
    from detrdoctor.callbacks.data_gate import DataCheckEvents, stop_on_failures
    from detrdoctor.datadoctor.doctor import collect_splits, judge_dataset
    from detrdoctor.runconfig import announce_layout, env_check_command

    announce_layout(cfg)
    resolve_num_classes(cfg)
    train, val = collect_splits(cfg, 32)
    rows = judge_dataset(train, val, cfg)
    stop_on_failures(rows, env_check_command(cfg, profile))
    return DataCheckEvents(rows), len(train.images)
