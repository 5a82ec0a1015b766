"""`detrdoctor convert ROOT OUT`: any dataset detrdoctor recognises, written as a COCO export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from detrdoctor.options import Json


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    """The flags of `convert`."""

    root: Annotated[str, typer.Argument(help="A dataset folder in any layout detrdoctor reads (COCO, YOLO, VOC, ...).")]
    out: Annotated[str, typer.Argument(help="Output folder (new or empty): gets annotations/, train2017/, val2017/.")]
    copy: Annotated[
        bool, typer.Option("--copy", help="Copy the images (default: hard links, else symbolic links).")
    ] = False
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Share of the images held out for val when the dataset has one split (default: 0.1)."),
    ] = None
    json_output: Json = False


def run_convert(options: ConvertOptions) -> int:
    """Write a dataset as a COCO export (annotations/instances_{train,val}2017.json + images), for any tool."""
    from rich.console import Console
    from rich.markup import escape

    from detr.config import DataConfig
    from detr.data.export import check_out, export_coco
    from detr.data.layout import find_layout
    from detr.data.root import dataset_root
    from detr.errors import ConfigError
    from detrdoctor.progress_bar import progress_bar

    data_cfg = DataConfig(coco_path=options.root)
    if options.val_fraction is not None:
        if not 0 <= options.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {options.val_fraction}")
        data_cfg.val_fraction = options.val_fraction
    check_out(dataset_root(data_cfg), Path(options.out))  # bad paths and unknown layouts: named before the bar
    find_layout(data_cfg)
    console = Console(stderr=True, highlight=False)
    with progress_bar(console, remaining=True, label="linking" if not options.copy else "copying") as progress:
        task = progress.add_task("convert", total=None)
        summary = export_coco(
            data_cfg,
            Path(options.out),
            copy=options.copy,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    if options.json_output:
        print(json.dumps(summary, indent=2))
        return 0
    splits = ", ".join(
        f"{name} {s['images']} images, {s['annotations']} boxes" for name, s in summary["splits"].items()
    )
    how = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in summary["images"].items() if n)
    Console(highlight=False).print(
        f"read: {escape(summary['layout'])}\nwrote a COCO export to [bold]{escape(summary['out'])}[/]: {splits}, "
        f"{len(summary['categories'])} categories; images as {how}",
        soft_wrap=True,
    )
    return 0
