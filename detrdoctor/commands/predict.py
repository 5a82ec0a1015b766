"""`detrdoctor predict`: run a checkpoint on images or a dataset split, draw the boxes, write COCO results.

Detections come from `predict_detections`, the function `evaluate` scores, with the same model building,
transforms and batching: predictions.json of a validation split scores exactly `evaluate`'s AP. It holds every
detection the model makes (the COCO results format is scored over all of them); `--threshold` only chooses
which boxes are drawn.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from detrdoctor.options import CONFIG, BatchSize, Device, Json, Weights, data_flag

if TYPE_CHECKING:
    import numpy as np
    import torch
    from rich.progress import Progress
    from torch.utils.data import DataLoader

    from detr.config import RunConfig
    from detr.onnx_runtime import OnnxDetector


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """The flags of `predict`."""

    sources: Annotated[list[str] | None, typer.Argument(help="Image files and folders (searched recursively).")] = None
    weights: Weights
    coco_path: Annotated[
        str | None, data_flag("With --split: the dataset root (default: the checkpoint's)."), CONFIG
    ] = None
    split: Annotated[str | None, typer.Option(help="Run on a dataset split (train or val) instead of files.")] = None
    out: Annotated[str, typer.Option(help="Folder for the drawn images and predictions.json.")] = "predictions"
    threshold: Annotated[
        float, typer.Option(help="Draw boxes with at least this score (predictions.json keeps all).")
    ] = 0.5
    batch_size: BatchSize = None
    device: Device = None
    amp: Annotated[str, typer.Option(help="Mixed precision: off, bf16 or fp16.")] = "off"
    compare: Annotated[
        bool, typer.Option("--compare", help="With --split: the ground truth drawn beside the boxes.")
    ] = False
    json_output: Json = False


@dataclass
class Inputs:
    """What the model runs on: a loader of (images, mask, targets) and, per image id, its file and output name."""

    loader: DataLoader
    files: dict[Any, tuple[Path, str]]  # image_id → (path, name); image ids are ints (COCO ids or file indices)
    coco: Any  # the split's COCO ground truth, None for plain files
    folders: list[Path]  # the image folders read: --out may be none of them, nor hold one
    oversized: dict[str, str]  # path → why: more pixels than [data] max_image_pixels, skipped before decoding

    def result_id(self, image_id: int) -> int | str:
        """The image_id written to predictions.json: the COCO id of a split, the file name otherwise."""
        return image_id if self.coco is not None else self.files[image_id][1]


def check_options(options: PredictOptions) -> None:
    from detr.errors import ConfigError

    if options.split and options.sources:
        raise ConfigError("give either image files/folders or --split, not both")
    if not options.split and not options.sources:
        raise ConfigError("nothing to predict on: give image files or folders, or --split val (with --coco-path ROOT)")
    if options.coco_path and not options.split:
        raise ConfigError("--coco-path names the dataset of --split: add --split val (or train)")
    if options.split not in (None, "train", "val"):
        raise ConfigError(f"--split must be train or val, got '{options.split}'")
    if options.compare and not options.split:
        raise ConfigError("--compare draws the ground truth, so it needs a dataset split (--split val)")
    if not 0.0 <= options.threshold <= 1.0:
        raise ConfigError(f"--threshold must be between 0 and 1, got {options.threshold}")


def require_detr(ckpt: dict[str, Any], weights: str) -> None:
    """A checkpoint without DETR's class and query embeddings is something else: say so before building anything."""
    from detr.checkpoint import model_state_dict
    from detr.errors import CheckpointError

    state_dict = model_state_dict(ckpt, weights)
    if not {"class_embed.weight", "query_embed.weight"} <= state_dict.keys():
        raise CheckpointError(f"{weights} is not a DETR checkpoint (it has no class_embed/query_embed weights)")


def onnx_config_and_detector(
    options: PredictOptions, overrides: dict[str, dict[str, Any]]
) -> tuple[RunConfig, dict[str, Any], OnnxDetector]:
    """An exported file (`detrdoctor export`) in onnxruntime, the config it was exported with (its validation
    transform: what the file expects to see), and its categories as a checkpoint carries them."""
    from detr.config import config_from_dict, tomllib, validate
    from detr.engine.device import resolve_device
    from detr.errors import ConfigError
    from detr.onnx_runtime import OnnxDetector
    from detrdoctor.extras import require
    from detrdoctor.profiles import load_profile
    from detrdoctor.runconfig import apply_flags

    require("onnxruntime", "export", "onnxruntime", "predict on an ONNX file")
    if options.amp != "off":
        raise ConfigError(f"--amp {options.amp}: an ONNX file runs in the precision it was exported in (--amp off)")
    device = resolve_device(options.device or "auto")
    detector = OnnxDetector(options.weights, device)
    written = detector.metadata.get("config")
    # A file exported elsewhere with the same inputs and outputs: the paper's validation transform.
    cfg = config_from_dict(tomllib.loads(written), options.weights) if written else load_profile("detr-r50")
    cfg.train.device = str(device)
    apply_flags(cfg, overrides)
    validate(cfg)
    categories = json.loads(detector.metadata.get("categories", "[]"))
    return cfg, {"categories": categories}, detector


def split_inputs(cfg: RunConfig, split: str, device: torch.device) -> Inputs:
    """A dataset split, loaded exactly as `evaluate` loads it."""
    from detr.config import device_batch_size
    from detr.data import build_dataset, check_dataset
    from detr.engine.loaders import build_eval_loader

    check_dataset(cfg.data, split)
    dataset = build_dataset(cfg.data, split, train=False)
    oversized = oversized_images([dataset.image_path(i) for i in range(len(dataset))], cfg.data.max_image_pixels)
    dataset.ids = [image_id for i, image_id in enumerate(dataset.ids) if str(dataset.image_path(i)) not in oversized]
    loader = build_eval_loader(dataset, cfg.data, device_batch_size(cfg.train), device=device)
    files = {
        image_id: (dataset.image_path(i), str(dataset.coco.imgs[image_id]["file_name"]))
        for i, image_id in enumerate(dataset.ids)
    }
    return Inputs(loader, files, dataset.coco, [dataset.image_dir], oversized)


def oversized_images(paths: list[Path], max_pixels: int) -> dict[str, str]:
    """The images whose header promises more than `max_pixels` pixels, with the reason; none is decoded."""
    from detr.data.decode import OversizedImageError, check_pixels, header_size

    found = {}
    for path in paths:
        try:
            check_pixels(path, header_size(path), max_pixels)
        except OversizedImageError as e:
            found[str(path)] = str(e).removeprefix(f"{path}: ")
    return found


def file_inputs(cfg: RunConfig, sources: list[str], out: Path, device: torch.device) -> Inputs:
    """Image files and folders, read with the validation transforms (drawn images of an earlier run into an
    --out inside a source folder left out)."""
    from torch.utils.data import DataLoader

    from detr.config import device_batch_size
    from detr.data.files import IMAGE_SUFFIXES, ImageFiles, collate_readable, find_images
    from detr.errors import DataError

    for source in sources:
        if not Path(source).exists():
            raise DataError(f"{source}: no such file or folder")
    images = [(path, name) for path, name in find_images(sources) if not path.resolve().is_relative_to(out.resolve())]
    if not images:
        raise DataError(f"no images in {', '.join(sources)} (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
    oversized = oversized_images([path for path, _ in images], cfg.data.max_image_pixels)
    images = [(path, name) for path, name in images if str(path) not in oversized]
    if not images:
        raise DataError(f"every image is larger than [data] max_image_pixels: {next(iter(oversized.values()))}")
    dataset = ImageFiles([path for path, _ in images], cfg.data)
    loader = DataLoader(
        dataset,
        batch_size=device_batch_size(cfg.train),
        collate_fn=collate_readable,
        num_workers=cfg.data.num_workers,
        pin_memory=device.type == "cuda",
    )
    folders = [Path(s) for s in sources if Path(s).is_dir()]
    return Inputs(loader, dict(enumerate(images)), None, folders, oversized)


def check_out(out: Path, inputs: Inputs) -> None:
    """--out must not be an input image folder nor hold one: drawn images would replace the images read."""
    from detr.errors import ConfigError

    for folder in inputs.folders:
        if folder.resolve().is_relative_to(out.resolve()):
            what = "is" if folder.resolve() == out.resolve() else "holds"
            raise ConfigError(
                f"--out {out} {what} the image folder {folder}: the drawn images would replace the images "
                "read; choose another --out"
            )


def output_paths(inputs: Inputs, image_ids: list[int], out: Path) -> dict[int, Path]:
    """Where each drawn image goes: its name under --out (kept inside it: an absolute or `../` name from a
    dataset loses what leads out), never onto a file read, never twice onto one path."""
    from detr.outputs import resolve_inside

    read = {path.resolve() for path, _ in inputs.files.values()}
    taken: set[Path] = set()
    paths = {}
    for image_id in image_ids:
        target = resolve_inside(out, inputs.files[image_id][1])
        candidate, n = target, 1
        while candidate.resolve() in read or candidate in taken:
            n += 1
            candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
        taken.add(candidate)
        paths[image_id] = candidate
    return paths


def tracked(loader: DataLoader, progress: Progress, description: str) -> Iterator:
    """`loader`'s batches, advancing a progress bar."""
    task = progress.add_task(description, total=len(loader))
    for batch in loader:
        yield batch
        progress.advance(task)


def draw_image(
    inputs: Inputs,
    image_id: int,
    rows: np.ndarray,
    names: dict[int, str],
    threshold: float,
    compare: bool,
    target: Path,
) -> int:
    """Write the drawn image of `image_id` to `target`; returns how many boxes were drawn."""
    import torch
    from PIL import Image

    from detr.data.decode import read_rgb
    from detr.outputs import writing
    from detrdoctor.predictions.draw import draw_boxes, enlarged, side_by_side

    path = inputs.files[image_id][0]
    image, factor = enlarged(read_rgb(path))
    shown = rows[rows[:, 5] >= threshold]
    xyxy = torch.from_numpy(shown[:, 1:5]).clone()
    xyxy[:, 2:] += xyxy[:, :2]
    labels = [int(c) for c in shown[:, 6]]
    texts = [f"{names.get(c, str(c))} {score:.2f}" for c, score in zip(labels, shown[:, 5])]
    drawn = draw_boxes(image, xyxy * factor, labels, texts)
    if compare:
        truth = [a for a in inputs.coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in truth], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        truth_labels = [int(a["category_id"]) for a in truth]
        truth_texts = [names.get(c, str(c)) for c in truth_labels]
        drawn = side_by_side(draw_boxes(image, boxes * factor, truth_labels, truth_texts), drawn)
    with writing(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(drawn.permute(1, 2, 0).contiguous().numpy()).save(target, quality=95)
    return len(shown)


def draw_all(
    inputs: Inputs,
    detections: np.ndarray,
    image_ids: list[int],
    names: dict[int, str],
    options: PredictOptions,
    progress: Progress,
) -> dict[str, int]:
    """Draw every scored image into --out; returns the boxes drawn per class name."""
    import numpy as np

    order = np.argsort(detections[:, 0], kind="stable")
    ids, starts = np.unique(detections[order, 0], return_index=True)
    rows_of = dict(zip(ids.astype(int).tolist(), np.split(detections[order], starts[1:])))
    task = progress.add_task("drawing", total=len(image_ids))
    boxes_drawn: dict[str, int] = {}
    targets = output_paths(inputs, image_ids, Path(options.out))
    for image_id in image_ids:
        rows = rows_of.get(image_id, np.zeros((0, 7)))
        draw_image(inputs, image_id, rows, names, options.threshold, options.compare, targets[image_id])
        for c in rows[rows[:, 5] >= options.threshold, 6].astype(int).tolist():
            label = names.get(c, str(c))
            boxes_drawn[label] = boxes_drawn.get(label, 0) + 1
        progress.advance(task)
    return boxes_drawn


def results_json(inputs: Inputs, detections: np.ndarray) -> list[dict[str, Any]]:
    """COCO results: image_id, category_id (the dataset's own ids: the model's labels are), bbox xywh, score."""
    return [
        {
            "image_id": inputs.result_id(int(r[0])),
            "category_id": int(r[6]),
            "bbox": [float(r[1]), float(r[2]), float(r[3]), float(r[4])],
            "score": float(r[5]),
        }
        for r in detections
    ]


def write_json_atomic(path: Path, data: Any) -> None:
    """Strict JSON (no NaN) through a temporary file renamed over `path`: a reader never sees half a file."""
    import os

    from detr.outputs import writing

    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path):
        try:
            tmp.write_text(json.dumps(data, allow_nan=False))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def run_predict(options: PredictOptions) -> int:
    """Run a checkpoint on images or a dataset split: drawn boxes and COCO-format predictions.json."""
    import torch
    from rich.console import Console
    from rich.markup import escape

    from detr.checkpoint import category_names
    from detr.engine.device import resolve_amp_dtype, resolve_device
    from detr.engine.evaluate import detect_all, predict_detections
    from detr.errors import DataError
    from detr.onnx_runtime import is_onnx_file
    from detr.outputs import make_folder
    from detrdoctor.commands.evaluate import checkpoint_model, require_finite_detections
    from detrdoctor.options import config_overrides
    from detrdoctor.progress_bar import progress_bar
    from detrdoctor.runconfig import config_for_weights

    check_options(options)
    overrides = config_overrides(options)
    onnx = is_onnx_file(options.weights)
    if onnx:
        cfg, ckpt, detector = onnx_config_and_detector(options, overrides)
        device = resolve_device(cfg.train.device)
    else:
        cfg, ckpt = config_for_weights(options.weights, None, overrides)
        require_detr(ckpt, options.weights)
        device = resolve_device(cfg.train.device)
        amp_dtype = resolve_amp_dtype(options.amp, device)
    if options.split:
        inputs = split_inputs(cfg, options.split, device)
    else:
        inputs = file_inputs(cfg, options.sources or [], Path(options.out), device)
    out = Path(options.out)
    check_out(out, inputs)
    if not onnx:
        model, postprocessor = checkpoint_model(cfg, ckpt, options.weights, device)
    make_folder(out)
    names = category_names(ckpt, inputs.coco)

    started = time.perf_counter()
    with progress_bar(Console(stderr=True), remaining=True) as progress:
        batches = tracked(inputs.loader, progress, "predicting (batches)")
        with torch.inference_mode():
            if onnx:
                detections, image_ids = detect_all(detector, batches, device)
            else:
                detections, image_ids = predict_detections(model, postprocessor, batches, device, amp_dtype)
        predict_s = time.perf_counter() - started
        scored = set(image_ids)
        unreadable = [str(path) for image_id, (path, _) in inputs.files.items() if image_id not in scored]
        if not scored:
            raise DataError(
                f"none of the {len(unreadable)} images could be read: "
                f"{', '.join(unreadable[:3])}{', ...' if len(unreadable) > 3 else ''}"
            )
        require_finite_detections(detections, options.weights)
        write_json_atomic(out / "predictions.json", results_json(inputs, detections))
        boxes_drawn = draw_all(inputs, detections, image_ids, names, options, progress)

    if onnx:
        summary_runtime = {"runtime": f"onnxruntime ({detector.provider})"}
    else:
        summary_runtime = {"runtime": "torch"}
    if options.split:
        source: str | list[str] = f"{options.split} split of {cfg.data.coco_path or 'the synthetic dataset'}"
    else:
        source = options.sources or []
    summary: dict[str, Any] = {
        "weights": options.weights,
        "source": source,
        "device": str(device),
        **summary_runtime,
        "images": len(image_ids),
        "unreadable": len(unreadable),
        "unreadable_files": unreadable,
        "oversized": len(inputs.oversized),
        "oversized_files": sorted(inputs.oversized),
        "out": str(out),
        "predictions": str(out / "predictions.json"),
        "detections": len(detections),
        "threshold": options.threshold,
        "boxes_drawn": sum(boxes_drawn.values()),
        "boxes_per_class": dict(sorted(boxes_drawn.items())),
        "images_per_s": len(image_ids) / predict_s if predict_s > 0 else None,
    }
    if options.json_output:
        print(json.dumps(summary))
        return 0
    console = Console(highlight=False)
    for path, reason in inputs.oversized.items():
        console.print(f"[yellow]skipped[/] {escape(path)}: {escape(reason)}", soft_wrap=True)
    for path in unreadable:
        console.print(f"[yellow]skipped[/] {escape(path)}: not a readable image", soft_wrap=True)
    console.print(
        f"{len(image_ids)} images on {device} ({summary['images_per_s']:.1f} images/s) → [bold]{escape(str(out))}[/]: "
        f"{summary['boxes_drawn']} boxes with score ≥ {options.threshold} drawn"
        + (" beside the ground truth" if options.compare else "")
        + (f", {len(unreadable)} unreadable skipped" if unreadable else ""),
        soft_wrap=True,
    )
    if boxes_drawn:
        console.print(
            "  boxes per class: "
            + ", ".join(f"{escape(name)} {count}" for name, count in summary["boxes_per_class"].items())
        )
    console.print(
        f"{escape(summary['predictions'])}: all {len(detections)} detections (every score), COCO results format",
        soft_wrap=True,
    )
    return 0
