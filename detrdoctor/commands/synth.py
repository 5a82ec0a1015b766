"""`detrdoctor synth`: render the synthetic COCO-format dataset, with a progress bar."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer


@dataclass(frozen=True, kw_only=True)
class SynthOptions:
    """The flags of `synth`."""

    out: Annotated[str, typer.Argument(help="Output folder (gets train2017/, val2017/, annotations/).")]
    train_images: Annotated[int, typer.Option(help="Images in the training split.")] = 2000
    val_images: Annotated[int, typer.Option(help="Images in the validation split.")] = 200
    image_size: Annotated[int, typer.Option(help="Longer image side in pixels.")] = 640
    seed: Annotated[int, typer.Option(help="Same seed → byte-identical dataset.")] = 0


def run_synth(options: SynthOptions) -> int:
    """Render a synthetic COCO-format detection dataset."""
    from rich.console import Console

    from detr.data import generate_synthetic_coco
    from detr.errors import ConfigError
    from detrdoctor.progress_bar import progress_bar

    for flag, value, low in (
        ("--train-images", options.train_images, 1),
        ("--val-images", options.val_images, 1),
        ("--image-size", options.image_size, 32),
    ):
        if value < low:
            raise ConfigError(f"{flag} must be at least {low}, got {value}")
    console = Console(stderr=True)
    total = options.train_images + options.val_images
    with progress_bar(console, remaining=True, label="rendering") as progress:
        task = progress.add_task("synth", total=total)
        root = generate_synthetic_coco(
            options.out,
            train_images=options.train_images,
            val_images=options.val_images,
            image_size=options.image_size,
            seed=options.seed,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    Console().print(
        f"wrote {options.train_images} + {options.val_images} images and COCO annotations to [bold]{root}[/]"
    )
    return 0
