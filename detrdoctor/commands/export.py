"""`detrdoctor export`: a checkpoint to ONNX, then proof on real or synthetic images that the file detects the same.

The checkpoint loads as `evaluate` loads it (ours and official ones). The file is written atomically; a failed
check leaves it written but says it is unverified, and exits 1.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypedDict

import typer

from detrdoctor.options import CONFIG, Json, Weights, data_flag

if TYPE_CHECKING:
    import torch
    from rich.console import Console

    from detr.config import RunConfig
    from detr.export import ExportShape
    from detr.onnx_runtime import OnnxDetector
    from detrdoctor.export_check import CheckInputs, CheckRecord, TimingRecord


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """The flags of `export`."""

    images: Annotated[
        list[str] | None,
        typer.Argument(help="Images or folders for the check (default: synthetic images, or --split)."),
    ] = None
    weights: Weights
    format: Annotated[str, typer.Option("--format", help="File format (onnx).")] = "onnx"
    out: Annotated[str, typer.Option(help="The file to write (its folder must exist).")] = "model.onnx"
    opset: Annotated[
        int | None, typer.Option(help="ONNX opset (default 18; up to what the installed onnx writes).")
    ] = None
    batch: Annotated[str, typer.Option(help="Batch size fixed in the file, or dynamic.")] = "dynamic"
    size: Annotated[str, typer.Option(help="Image size fixed in the file: --size H W, or dynamic.")] = "dynamic"
    postprocess: Annotated[
        bool,
        typer.Option("--postprocess", help="Include the post-processing: outputs scores, labels and boxes in pixels."),
    ] = False
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Compare PyTorch and onnxruntime (on by default).")
    ] = True
    split: Annotated[str | None, typer.Option(help="Check on a dataset split (val), with AP of both.")] = None
    coco_path: Annotated[
        str | None, data_flag("With --split: the dataset root (default: the checkpoint's)."), CONFIG
    ] = None
    threshold: Annotated[float, typer.Option(help="Detections with at least this score must match.")] = 0.5
    rtol: Annotated[float, typer.Option(help="Relative tolerance of the outputs.")] = 1e-3
    atol: Annotated[float, typer.Option(help="Absolute tolerance of the outputs.")] = 1e-5
    timing_runs: Annotated[
        int, typer.Option(help="Timed runs per runtime after 2 warm-ups (median; 0: no timing).")
    ] = 10
    batch_size: Annotated[
        int | None, typer.Option(help="Images per batch in the check (default: the checkpoint's)."), CONFIG
    ] = None
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or cuda:N (onnxruntime: CUDA when it has it)."), CONFIG
    ] = None
    verify: Annotated[str | None, typer.Option(help="Check this existing ONNX file instead of exporting one.")] = None
    json_output: Json = False


class DynamicRecord(TypedDict):
    batch: bool
    size: bool


class ExportRecord(TypedDict):
    file: str
    format: str
    opset: int
    dynamic: DynamicRecord
    postprocess: bool
    bytes: int
    export_s: float | None  # None when an existing file was verified
    verified: bool | None  # None: not checked
    check: CheckRecord | None
    ms_per_image: TimingRecord | None


def parse_shape(batch: str, size: str, images: list[str]) -> tuple[ExportShape, list[str]]:
    """--batch B|dynamic and --size H W|HxW|dynamic → the file's shape, and the image arguments left over.

    `--size 800 1066` reaches the command as --size 800 followed by a positional 1066: a whole number that names
    no file is taken as the width.
    """
    from detr.errors import ConfigError
    from detr.export import MIN_DYNAMIC_SIDE, ExportShape

    fixed_batch: int | None = None
    if batch != "dynamic":
        if not batch.isdigit() or int(batch) < 1:
            raise ConfigError(f"--batch must be a positive whole number or dynamic, got '{batch}'")
        fixed_batch = int(batch)
    if size == "dynamic":
        return ExportShape(fixed_batch, None), images
    parts = size.lower().replace("x", " ").replace(",", " ").split()
    if len(parts) == 1 and images and images[0].isdigit() and not Path(images[0]).exists():
        parts, images = [parts[0], images[0]], images[1:]
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigError(f"--size takes the height and width (--size 800 1066) or dynamic, got '{size}'")
    height, width = int(parts[0]), int(parts[1])
    if min(height, width) < MIN_DYNAMIC_SIDE:
        raise ConfigError(f"--size {height} {width}: each side must be at least {MIN_DYNAMIC_SIDE} pixels")
    return ExportShape(fixed_batch, (height, width)), images


def check_options(options: ExportOptions, images: list[str]) -> None:
    from detr.errors import ConfigError

    if options.format != "onnx":
        raise ConfigError(f"--format {options.format}: only onnx is supported")
    if options.split not in (None, "train", "val"):
        raise ConfigError(f"--split must be train or val, got '{options.split}'")
    if options.split and images:
        raise ConfigError("check either on image files/folders or on --split, not both")
    if options.coco_path and not options.split:
        raise ConfigError("--data names the dataset of --split: add --split val")
    if not options.check and (images or options.split):
        raise ConfigError("images and --split are what the check runs on: drop them, or drop --no-check")
    if options.verify and not options.check:
        raise ConfigError("--verify checks an existing file: it cannot go with --no-check")
    if not 0.0 <= options.threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {options.threshold}")
    if options.rtol < 0 or options.atol < 0:
        raise ConfigError("--rtol and --atol must be ≥ 0")
    if options.timing_runs < 0:
        raise ConfigError(f"--timing-runs must be ≥ 0, got {options.timing_runs}")
    out = Path(options.verify or options.out)
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"{'--verify' if options.verify else '--out'} {out}: the file name must end in .onnx")
    if not options.verify and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist (create it first)")
    if not options.verify and out.resolve() == Path(options.weights).resolve():
        raise ConfigError(f"--out {out} is the checkpoint itself: pick another file name")


def check_inputs(options: ExportOptions, images: list[str], cfg: RunConfig, device: torch.device) -> CheckInputs:
    """The user's images, a dataset split (loaded as predict and evaluate load them), or synthetic images."""
    from detrdoctor.commands.predict import file_inputs, split_inputs
    from detrdoctor.export_check import CheckInputs, synthetic_inputs

    if options.split:
        split = split_inputs(cfg, options.split, device)
        names = {image_id: name for image_id, (_, name) in split.files.items()}
        where = cfg.data.coco_path or "the synthetic dataset"
        return CheckInputs("split", f"the {options.split} split of {where}", split.loader, names, split.coco)
    if images:
        from detr.data.decode import CorruptImageError, read_rgb
        from detr.errors import DataError

        files = file_inputs(cfg, images, Path(options.verify or options.out), device)
        names = {image_id: str(path) for image_id, (path, _) in files.files.items()}
        for path in names.values():  # before anything is exported: the check compares on every image given
            try:
                read_rgb(Path(path))
            except CorruptImageError:
                raise DataError(f"{path}: not a readable image (the check runs on every image given)") from None
        return CheckInputs("files", ", ".join(images), files.loader, names)
    return synthetic_inputs(cfg.data)


def metadata_of(cfg: RunConfig, ckpt: dict, weights: str, postprocess: bool) -> dict[str, str]:
    """What `predict --weights model.onnx` needs besides the graph: the config (its validation transform) and
    the category names."""
    from detr.checkpoint import checkpoint_categories
    from detr.config import config_to_toml
    from detr.export import categories_metadata

    return {
        "config": config_to_toml(cfg),
        "categories": categories_metadata(checkpoint_categories(ckpt)),
        "weights": weights,
        "postprocess": json.dumps(postprocess),
    }


def run_export(options: ExportOptions) -> int:
    """Export a checkpoint to ONNX and check that onnxruntime detects what PyTorch detects.

    Exit 0 when the file is written and verified (or not checked), 1 when the check failed.
    """
    from detrdoctor.extras import require

    shape, images = parse_shape(options.batch, options.size, options.images or [])
    check_options(options, images)
    require("onnx", "export", "onnx", "export")
    if not options.verify:
        require("onnxscript", "export", "onnxscript", "torch.onnx.export")
    if options.check:
        require("onnxruntime", "export", "onnxruntime", "the export check")

    import torch
    from rich.console import Console

    from detr.engine.device import resolve_device
    from detr.export import DEFAULT_OPSET, check_opset, export_onnx
    from detr.onnx_runtime import OnnxDetector
    from detrdoctor.commands.evaluate import checkpoint_model
    from detrdoctor.commands.predict import require_detr
    from detrdoctor.options import config_overrides
    from detrdoctor.runconfig import config_for_weights

    opset = options.opset if options.opset is not None else DEFAULT_OPSET
    if not options.verify:
        check_opset(opset)
    cfg, ckpt = config_for_weights(options.weights, None, config_overrides(options))
    require_detr(ckpt, options.weights)
    device = resolve_device(cfg.train.device)
    inputs = check_inputs(options, images, cfg, device) if options.check else None
    model, _ = checkpoint_model(cfg, ckpt, options.weights, torch.device("cpu"))
    model.eval()
    err = Console(stderr=True, highlight=False)

    path = Path(options.verify or options.out)
    export_s = None
    if not options.verify:
        started = time.perf_counter()
        with err.status(f"exporting {options.weights} to {path} (torch.onnx.export, opset {opset})"):
            export_onnx(
                model,
                path,
                opset=opset,
                shape=shape,
                postprocess=options.postprocess,
                metadata=metadata_of(cfg, ckpt, options.weights, options.postprocess),
            )
        export_s = time.perf_counter() - started

    check: CheckRecord | None = None
    timing: TimingRecord | None = None
    if options.check:
        assert inputs is not None
        detector = OnnxDetector(path, device)
        model.to(device)
        check, timing = run_check(model, detector, inputs, device, options, err)
    record = file_record(path, export_s, check, timing)
    if options.json_output:
        print(json.dumps(record))
    else:
        render(Console(highlight=False), record, options)
    return 1 if check is not None and not check["passed"] else 0


def run_check(
    model: torch.nn.Module,
    detector: OnnxDetector,
    inputs: CheckInputs,
    device: torch.device,
    options: ExportOptions,
    err: Console,
) -> tuple[CheckRecord, TimingRecord | None]:
    """The comparison with progress on stderr, its verdict, and the speed of both on the first image."""
    from detrdoctor.export_check import compare, first_image, judge, time_both
    from detrdoctor.progress_bar import progress_bar

    total = len(inputs.batches) if hasattr(inputs.batches, "__len__") else None  # type: ignore[arg-type]
    with progress_bar(err) as progress:
        task = progress.add_task("checking: PyTorch and onnxruntime (batches)", total=total)
        comparison = compare(
            model,
            detector,
            inputs,
            device,
            options.threshold,
            options.rtol,
            options.atol,
            lambda: progress.advance(task),
        )
    check = judge(comparison, inputs, options.threshold, options.rtol, options.atol, detector.postprocess)
    timing = None
    if options.timing_runs > 0:
        for images, mask, sizes in first_image(inputs):
            chunk = detector.fit(images, mask, sizes)[0]
            with err.status(
                f"timing PyTorch and onnxruntime on one {chunk.images.shape[-2]}×{chunk.images.shape[-1]} image"
            ):
                timing = time_both(model, detector, chunk, device, options.timing_runs, warmup=2)
    return check, timing


def file_record(
    path: Path, export_s: float | None, check: CheckRecord | None, timing: TimingRecord | None
) -> ExportRecord:
    """The --json record: what the file is (read back from it), the check and the speed."""
    import onnx

    from detr.export import POSTPROCESSED_OUTPUTS

    proto = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim  # images [B, 3, H, W]
    outputs = tuple(o.name for o in proto.graph.output)
    return {
        "file": str(path),
        "format": "onnx",
        "opset": int(opset),
        "dynamic": {"batch": not dims[0].HasField("dim_value"), "size": not dims[2].HasField("dim_value")},
        "postprocess": outputs == POSTPROCESSED_OUTPUTS,
        "bytes": path.stat().st_size,
        "export_s": export_s,
        "verified": None if check is None else check["passed"],
        "check": check,
        "ms_per_image": timing,
    }


def render(console: Console, record: ExportRecord, options: ExportOptions) -> None:
    """The human report: the file, the check's numbers and verdict, the speed."""
    from rich.markup import escape

    dynamic = record["dynamic"]
    shape = f"batch {'dynamic' if dynamic['batch'] else 'fixed'}, size {'dynamic' if dynamic['size'] else 'fixed'}"
    took = f" in {record['export_s']:.1f} s" if record["export_s"] is not None else ""
    post = ", post-processed (scores, labels, boxes in pixels)" if record["postprocess"] else ""
    verb = "exported" if record["export_s"] is not None else "checking"
    console.print(
        f"{verb} [bold]{escape(record['file'])}[/] (onnx, opset {record['opset']}, {shape}{post}, "
        f"{record['bytes'] / 2**20:.1f} MiB){took}",
        soft_wrap=True,
    )
    check = record["check"]
    if check is None:
        console.print("not checked (--no-check): the file is unverified")
        return
    inputs = check["inputs"]
    console.print(
        f"check on {inputs['images']} images in {inputs['batches']} batches: {escape(inputs['description'])}",
        soft_wrap=True,
    )
    tol = check["tolerances"]
    diffs = ", ".join(
        f"{key} {check['max_abs_diff'][key]:.2e} (rel {check['max_rel_diff'][key]:.2e})"
        for key in ("logits", "scores", "boxes")
        if check["max_abs_diff"][key] is not None
    )
    console.print(f"  max |Δ| {diffs}; tolerance rtol {tol['rtol']:g}, atol {tol['atol']:g}")
    share = check["matching_detections"]
    if share is not None:
        console.print(
            f"  detections ≥ {check['threshold']:g}: {share:.0%} of images match "
            f"({check['detections_compared']} detections; same label, IoU ≥ {tol['iou']:g})"
            + (
                " — none above the threshold, lower --threshold to compare boxes"
                if not check["detections_compared"]
                else ""
            )
        )
    if check["ap"] is not None:
        ap = check["ap"]
        console.print(
            f"  AP PyTorch {ap['torch']:.4f}, onnxruntime {ap['onnxruntime']:.4f} (must agree to {tol['ap']:g})"
        )
    timing = record["ms_per_image"]
    if timing is not None:
        b, h, w = timing["shape"]
        console.print(
            f"speed ({timing['device']}, {timing['threads']} threads, {h}×{w}, median of {timing['runs']}): "
            f"PyTorch {timing['torch']:.1f} ms/image, onnxruntime {timing['onnxruntime']:.1f} ms/image"
        )
    if check["passed"]:
        console.print(f"[green]✓ verified[/]: {escape(record['file'])} detects what {escape(options.weights)} detects")
        return
    worst = check["worst"]
    console.print(f"[red]✗ check failed[/]: {escape('; '.join(check['failures']))}", soft_wrap=True)
    if worst is not None:
        console.print(
            f"  worst image: {escape(worst['image'])} ({worst['output']} |Δ| {worst['max_abs_diff']:.2e}, "
            f"{worst['tolerance_ratio']:.1f}× the tolerance"
            + ("" if worst["detections_match"] else ", detections differ")
            + ")",
            soft_wrap=True,
        )
    console.print(f"{escape(record['file'])} is written but UNVERIFIED", soft_wrap=True)
