"""The flags of `detrdoctor loader-bench`: what the command and `collect` read (see detrdoctor/options.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from detrdoctor.options import (
    BatchSize,
    DataRoot,
    Json,
    TrainAnnotations,
    TrainImages,
    ValAnnotations,
    ValImages,
    profile_flag,
)


@dataclass(frozen=True, kw_only=True)
class LoaderBenchOptions:
    """The flags of `loader-bench`."""

    profile: Annotated[str, profile_flag()] = "demo"
    coco_path: DataRoot = None
    split: Annotated[str, typer.Option(help="train or val.")] = "train"
    num_workers: Annotated[str, typer.Option(help="Comma-separated worker counts, or auto.")] = "auto"
    pin_memory: Annotated[str, typer.Option(help="both, on or off.")] = "both"
    batch_size: BatchSize = None
    batches: Annotated[int, typer.Option(help="Batches to time per setting.")] = 30
    prefetch_factor: Annotated[int | None, typer.Option(help="DataLoader prefetch_factor.")] = None
    persistent_workers: Annotated[bool, typer.Option("--persistent-workers", help="Keep workers between epochs.")] = (
        False
    )
    step_time: Annotated[str, typer.Option(help="auto (measure the model), SECONDS, or none.")] = "auto"
    json_output: Json = False
    train_annotations: TrainAnnotations = None
    val_annotations: ValAnnotations = None
    train_images: TrainImages = None
    val_images: ValImages = None
