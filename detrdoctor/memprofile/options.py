"""The flags of `detrdoctor memprofile`: what the command and `make_plan` read (see detrdoctor/options.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from detrdoctor.options import Json, data_flag, profile_flag


@dataclass(frozen=True, kw_only=True)
class MemprofileOptions:
    """The flags of `memprofile`."""

    profile: Annotated[str, profile_flag()] = "detr-r50"
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,2,4,8"
    amp: Annotated[str, typer.Option(help="both, off, bf16 or fp16.")] = "both"
    shape: Annotated[str, typer.Option(help="worst, HxW or dataset.")] = "worst"
    find_max: Annotated[
        bool, typer.Option("--find-max", help="Search the largest batch size that fits, per AMP mode.")
    ] = False
    device: Annotated[str, typer.Option(help="auto, cuda[:N] or cpu.")] = "auto"
    estimate: Annotated[
        bool, typer.Option("--estimate", help="Estimate without allocating (also alongside a GPU measurement).")
    ] = False
    gpu_memory: Annotated[
        str | None, typer.Option(help="Device memory to plan for: a size (24GiB) or a GPU name (A100-80GB).")
    ] = None
    snapshot: Annotated[
        bool, typer.Option("--snapshot", help="Write a CUDA memory snapshot of the largest fitting point.")
    ] = False
    json_output: Json = False
    output_dir: Annotated[str | None, typer.Option(help="Also write CSV (and the snapshot) here.")] = None
    coco_path: Annotated[str | None, data_flag("Dataset for --shape dataset.")] = None
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Measure every point in this process instead of a fresh one.")
    ] = False
    safety_margin: Annotated[float, typer.Option(help="Share of device memory kept free when judging what fits.")] = 0.1
    build: str | None = None  # "module:function" building another model than DETR (tests only; no flag)
