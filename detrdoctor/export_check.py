"""Proof that an exported file detects what its checkpoint detects: both run on the same inputs, compared.

For every input image: the largest difference of each output against PyTorch's, and whether the detections above
the threshold match (same queries, same labels, IoU ≥ 0.99). On a dataset split both are also scored by COCOeval,
through the path `evaluate` uses. Then the speed of each, on one image.

Tolerances (numpy's allclose rule |onnx − torch| ≤ atol + rtol·|torch|, per element, flags --rtol and --atol): the
official DETR export test's rtol 1e-3 and atol 1e-5. A random-init DETR-R50 at 800×1066, 800×1333 and 480×640
stays within a fifth of them (logits 4.4e-6, boxes 1.2e-7 apart at most; benchmarks/bench_export.py), so they
leave room for float32 rounding and none for a wrong operator or weight.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from detr.onnx_runtime import Chunk, OnnxDetector
from detr.postprocess import batched_detections

if TYPE_CHECKING:
    from detr.config import DataConfig

MATCH_IOU = 0.99
AP_TOLERANCE = 1e-3
SCORE_MARGIN = 1e-3  # a detection this close to the threshold may fall on either side of it in the other runtime


class Tolerances(TypedDict):
    rtol: float
    atol: float
    iou: float
    ap: float


class InputsRecord(TypedDict):
    kind: str  # "synthetic", "files" or "split"
    description: str
    images: int
    batches: int


class WorstRecord(TypedDict):
    image: str
    output: str  # the output that differs most, relative to its tolerance
    max_abs_diff: float
    tolerance_ratio: float  # max |Δ| / (atol + rtol·|torch|): above 1 fails
    detections_match: bool


class CheckRecord(TypedDict):
    inputs: InputsRecord
    max_abs_diff: dict[str, float | None]  # logits, boxes, scores (None: the file has no such output)
    max_rel_diff: dict[str, float | None]
    matching_detections: float | None  # share of images whose detections above the threshold match
    detections_compared: int
    threshold: float
    ap: dict[str, float | None] | None  # {"torch", "onnxruntime"} on a dataset split
    tolerances: Tolerances
    worst: WorstRecord | None
    failures: list[str]
    passed: bool


class TimingRecord(TypedDict):
    torch: float
    onnxruntime: float
    runs: int
    warmup: int
    threads: int
    device: str  # PyTorch's device, and onnxruntime's execution provider
    shape: list[int]  # [batch, height, width] timed


@dataclass
class CheckInputs:
    """Batches (images, mask, targets) to compare on, a name per image id, and the split's COCO when scored."""

    kind: str
    description: str
    batches: Iterable[tuple[Tensor, Tensor, list[dict[str, Any]]]]
    names: dict[int, str]
    coco: Any = None


def synthetic_sizes(data: DataConfig) -> list[tuple[int, int]]:
    """Real-world image sizes as the validation transform makes them: 3:4 and the longest side allowed at the
    shorter side val_size (800×1066 and 800×1333 for DETR-R50), and a smaller 3:4 image (480×640)."""
    short, longest = data.val_size, max(data.max_size or 0, data.val_size)
    sizes = [(short, min(short * 4 // 3, longest)), (short, longest), (short * 3 // 5, short * 4 // 5)]
    return list(dict.fromkeys(sizes))


def synthetic_inputs(data: DataConfig, seed: int = 0) -> CheckInputs:
    """Smooth random images (normalised like real ones) at each size, alone and in a batch of two whose second
    image is smaller, so that the padding mask is exercised."""
    generator = torch.Generator().manual_seed(seed)
    names: dict[int, str] = {}
    batches = []

    def image(height: int, width: int) -> Tensor:
        coarse = torch.randn((1, 3, max(2, height // 16), max(2, width // 16)), generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear")[0]

    for height, width in synthetic_sizes(data):
        for batch in (1, 2):
            shapes = [(height, width), (height * 9 // 10, width * 3 // 4)][:batch]
            images = torch.zeros((batch, 3, height, width))
            mask = torch.ones((batch, height, width), dtype=torch.bool)
            targets = []
            for i, (h, w) in enumerate(shapes):
                images[i, :, :h, :w] = image(h, w)
                mask[i, :h, :w] = False
                image_id = len(names)
                names[image_id] = f"synthetic {h}×{w} (batch {batch} of {height}×{width}, image {i + 1})"
                targets.append({"image_id": image_id, "orig_size": torch.tensor([h, w])})
            batches.append((images, mask, targets))
    sizes = ", ".join(f"{h}×{w}" for h, w in synthetic_sizes(data))
    return CheckInputs("synthetic", f"synthetic images at {sizes}, batch 1 and 2", batches, names)


@dataclass
class ImageDiff:
    """One image's comparison."""

    name: str
    abs_diff: dict[str, float]
    rel_diff: dict[str, float]
    ratio: tuple[float, str]  # the largest tolerance ratio and its output
    matches: bool
    compared: int


def compare_arrays(reference: np.ndarray, other: np.ndarray, rtol: float, atol: float) -> tuple[float, float, float]:
    """(max |Δ|, max |Δ|/|reference| where |reference| > atol, max |Δ| / (atol + rtol·|reference|))."""
    reference, other = reference.astype(np.float64), other.astype(np.float64)
    delta = np.abs(other - reference)
    if not np.isfinite(other).all():
        return float("inf"), float("inf"), float("inf")
    big = np.abs(reference) > atol
    rel = float((delta[big] / np.abs(reference[big])).max()) if big.any() else 0.0
    return float(delta.max(initial=0.0)), rel, float((delta / (atol + rtol * np.abs(reference))).max(initial=0.0))


def detections_match(ours: dict[str, Tensor], theirs: dict[str, Tensor], threshold: float) -> tuple[bool, int]:
    """Whether the queries either runtime scores ≥ threshold agree (label, IoU ≥ 0.99, both above it or within
    SCORE_MARGIN of it), and how many detections PyTorch has above the threshold."""
    keep_ours, keep_theirs = ours["scores"] >= threshold, theirs["scores"] >= threshold
    either = keep_ours | keep_theirs
    if not either.any():
        return True, 0
    same_label = ours["labels"][either] == theirs["labels"][either]
    iou = box_iou(ours["boxes"][either].double(), theirs["boxes"][either].double()).diagonal()
    near = (ours["scores"][either] - theirs["scores"][either]).abs() <= SCORE_MARGIN
    same_side = (keep_ours[either] == keep_theirs[either]) | near
    return bool((same_label & (iou >= MATCH_IOU) & same_side).all()), int(keep_ours.sum())


@dataclass
class Comparison:
    """What the comparison gathers over all batches."""

    images: list[ImageDiff] = field(default_factory=list)
    rows_torch: list[np.ndarray] = field(default_factory=list)
    rows_onnx: list[np.ndarray] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    batches: int = 0


def compare(
    model: nn.Module,
    detector: OnnxDetector,
    inputs: CheckInputs,
    device: torch.device,
    threshold: float,
    rtol: float,
    atol: float,
    progress: Callable[[], None] = lambda: None,
) -> Comparison:
    """Run PyTorch and onnxruntime on every batch, fitted to the file's shape, and compare image by image."""
    from detr.engine.evaluate import detections_as_rows

    result = Comparison()
    for images, mask, targets in inputs.batches:
        if not targets:
            progress()
            continue
        sizes = torch.stack([t["orig_size"] for t in targets])
        offset = 0
        for chunk in detector.fit(images, mask, sizes):
            outputs_onnx = detector.run(chunk)
            outputs_torch = torch_outputs(model, chunk, detector.postprocess, device)
            detections_onnx = detector.detections(chunk, outputs_onnx)
            detections_torch = detector.detections(chunk, outputs_torch)  # post-processed as the file's are
            names = RAW_NAMES if not detector.postprocess else POSTPROCESSED_NAMES
            for row in range(chunk.real):
                target = targets[offset + row]
                abs_diff, rel_diff, ratios = {}, {}, []
                for name, ours, theirs in zip(names, outputs_torch, outputs_onnx):
                    if name == "labels":
                        continue
                    a, r, t = compare_arrays(ours[row], theirs[row], rtol, atol)
                    abs_diff[name], rel_diff[name] = a, r
                    ratios.append((t, name))
                matches, compared = detections_match(detections_torch[row], detections_onnx[row], threshold)
                image_id = int(target["image_id"])
                result.images.append(
                    ImageDiff(
                        inputs.names.get(image_id, str(image_id)), abs_diff, rel_diff, max(ratios), matches, compared
                    )
                )
            chunk_targets = targets[offset : offset + chunk.real]
            result.rows_torch.append(detections_as_rows(chunk_targets, detections_torch))
            result.rows_onnx.append(detections_as_rows(chunk_targets, detections_onnx))
            result.image_ids.extend(int(t["image_id"]) for t in chunk_targets)
            offset += chunk.real
        result.batches += 1
        progress()
    return result


RAW_NAMES = ("logits", "boxes")
POSTPROCESSED_NAMES = ("scores", "labels", "boxes")


@torch.inference_mode()
def torch_outputs(model: nn.Module, chunk: Chunk, postprocess: bool, device: torch.device) -> list[np.ndarray]:
    """PyTorch's counterpart of the file's outputs for `chunk` (real rows only)."""
    outputs = model(chunk.images.to(device), chunk.mask.to(device))
    logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
    if postprocess:
        tensors: tuple[Tensor, ...] = batched_detections(logits, boxes, chunk.sizes.to(device))
    else:
        tensors = (logits, boxes)
    return [
        t[: chunk.real].float().cpu().numpy() if t.is_floating_point() else t[: chunk.real].cpu().numpy()
        for t in tensors
    ]


def judge(
    comparison: Comparison,
    inputs: CheckInputs,
    threshold: float,
    rtol: float,
    atol: float,
    postprocess: bool,
) -> CheckRecord:
    """The check's record: the differences, the matching share, AP on a split, the worst image, the verdict."""
    from detr.engine.evaluate import coco_box_stats

    images = comparison.images
    names: tuple[str, ...] = POSTPROCESSED_NAMES if postprocess else RAW_NAMES
    keys = [k for k in ("logits", "boxes", "scores") if k in names]
    max_abs: dict[str, float | None] = {"logits": None, "boxes": None, "scores": None}
    max_rel: dict[str, float | None] = dict(max_abs)
    for key in keys:
        max_abs[key] = max((d.abs_diff[key] for d in images), default=0.0)
        max_rel[key] = max((d.rel_diff[key] for d in images), default=0.0)
    failures = []
    worst = max(images, key=lambda d: (not d.matches, d.ratio[0]), default=None)
    if any(d.ratio[0] > 1.0 for d in images):
        count = sum(d.ratio[0] > 1.0 for d in images)
        failures.append(f"outputs of {count} of {len(images)} images differ beyond rtol {rtol:g} / atol {atol:g}")
    matching = sum(d.matches for d in images) / len(images) if images else None
    if matching is not None and matching < 1.0:
        failures.append(
            f"detections ≥ {threshold:g} differ on {sum(not d.matches for d in images)} of {len(images)} images"
        )
    ap = None
    if inputs.coco is not None:
        rows_t = np.concatenate(comparison.rows_torch) if comparison.rows_torch else np.zeros((0, 7))
        rows_o = np.concatenate(comparison.rows_onnx) if comparison.rows_onnx else np.zeros((0, 7))
        ap = {
            "torch": coco_box_stats(inputs.coco, rows_t, comparison.image_ids)["AP"],
            "onnxruntime": coco_box_stats(inputs.coco, rows_o, comparison.image_ids)["AP"],
        }
        if abs((ap["torch"] or 0.0) - (ap["onnxruntime"] or 0.0)) > AP_TOLERANCE:
            failures.append(f"AP differs: {ap['torch']:.4f} with PyTorch, {ap['onnxruntime']:.4f} with onnxruntime")
    worst_record: WorstRecord | None = None
    if worst is not None:
        worst_record = {
            "image": worst.name,
            "output": worst.ratio[1],
            "max_abs_diff": worst.abs_diff[worst.ratio[1]],
            "tolerance_ratio": worst.ratio[0],
            "detections_match": worst.matches,
        }
    return {
        "inputs": {
            "kind": inputs.kind,
            "description": inputs.description,
            "images": len(images),
            "batches": comparison.batches,
        },
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
        "matching_detections": matching,
        "detections_compared": sum(d.compared for d in images),
        "threshold": threshold,
        "ap": ap,
        "tolerances": {"rtol": rtol, "atol": atol, "iou": MATCH_IOU, "ap": AP_TOLERANCE},
        "worst": worst_record,
        "failures": failures,
        "passed": not failures and bool(images),
    }


def median_ms(run: Callable[[], object], runs: int, warmup: int) -> float:
    """The median wall time of `run` in milliseconds, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def time_both(
    model: nn.Module, detector: OnnxDetector, chunk: Chunk, device: torch.device, runs: int, warmup: int
) -> TimingRecord:
    """ms per image of PyTorch and onnxruntime on the same fitted chunk, median of `runs` after `warmup`."""

    def run_torch() -> None:
        with torch.inference_mode():
            model(chunk.images.to(device), chunk.mask.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()

    batch = len(chunk.images)
    return {
        "torch": median_ms(run_torch, runs, warmup) / batch,
        "onnxruntime": median_ms(lambda: detector.run(chunk), runs, warmup) / batch,
        "runs": runs,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "device": f"{device} / {detector.provider}",
        "shape": [batch, *chunk.images.shape[-2:]],
    }


def first_image(inputs: CheckInputs) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """The first image of the first non-empty batch, alone (batch 1): what the speed is measured on."""
    for images, mask, targets in inputs.batches:
        if targets:
            yield images[:1], mask[:1], targets[0]["orig_size"][None]
            return
