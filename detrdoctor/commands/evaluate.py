"""`detrdoctor evaluate`: COCO box AP of a checkpoint, and with --breakdown what holds it down."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch
    from rich.console import Console
    from torch import nn

    from detr.config import RunConfig


CURVE_WIDTH = 12


@dataclass
class EvaluateOptions:
    weights: str
    profile: str | None
    coco_path: str | None
    batch_size: int | None
    device: str | None
    num_workers: int | None
    breakdown: bool
    per_class: bool
    json_output: bool
    train_annotations: str | None
    val_annotations: str | None
    train_images: str | None
    val_images: str | None
    confusion: bool = False
    pr: bool = False
    errors: bool = False
    threshold: float | None = None
    out: str | None = None

    @property
    def sections(self) -> set[str]:
        """What to compute beyond AP: "per_class", "pr", "confusion", "errors" (--breakdown: all of them)."""
        wanted = {
            "per_class": self.per_class or self.pr or self.breakdown,
            "pr": self.pr or self.breakdown or self.out is not None,
            "confusion": self.confusion or self.breakdown or self.out is not None,
            "errors": self.errors or self.breakdown,
        }
        return {name for name, on in wanted.items() if on}


def config_for_weights(
    weights: str, profile: str | None, overrides: dict[str, dict[str, Any]]
) -> tuple[RunConfig, dict[str, Any]]:
    """The config to run `weights` with, and the loaded checkpoint: the profile if given, else the checkpoint's
    own, else detr-r50 with what the weights reveal (class count, queries, layers, backbone); num_classes
    "auto" takes the weights'. The flags in `overrides` apply on top, validated; no backbone weights are
    fetched (the checkpoint carries the backbone)."""
    from detr import infer_config_from_state_dict
    from detr.checkpoint import load_checkpoint_file, model_state_dict
    from detr.config import AUTO, validate
    from detr.errors import CheckpointError
    from detrdoctor.commands.common import apply_flags
    from detrdoctor.commands.train import config_of_checkpoint
    from detrdoctor.profiles import load_profile

    ckpt = load_checkpoint_file(weights_file(weights))
    try:
        inferred = infer_config_from_state_dict(model_state_dict(ckpt, weights))
    except CheckpointError:  # not weights at all: loading them says so, in one line
        inferred = {}
    cfg = load_profile(profile) if profile else config_of_checkpoint(ckpt, weights)
    if cfg is None:
        cfg = load_profile("detr-r50")
        for key, value in inferred.items():
            if hasattr(cfg.model, key):
                setattr(cfg.model, key, value)
    if cfg.model.num_classes == AUTO and "num_classes" in inferred:  # the weights decide the classifier's size
        cfg.model.num_classes = inferred["num_classes"]
    apply_flags(cfg, overrides)
    validate(cfg)
    cfg.model.backbone_weights = "none"
    return cfg, ckpt


def weights_file(weights: str) -> str:
    """--weights: a file or URL as given; a run folder → its best.pth (else checkpoint.pth), said on stderr."""
    from rich.console import Console
    from rich.markup import escape

    from detr.engine.checkpointing import run_folder_weights

    if weights.startswith(("http://", "https://")):
        return weights
    path = run_folder_weights(weights)
    if str(path) != weights and path != Path(weights):
        Console(stderr=True, highlight=False).print(f"weights: {escape(str(path))}", soft_wrap=True)
    return str(path)


def checkpoint_model(
    cfg: RunConfig, ckpt: dict[str, Any], weights: str, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """The checkpoint's weights (its EMA when it has one) in the model `cfg` builds, on `device`, and the
    post-processor: what evaluate and predict both score with."""
    from detr import build_model
    from detr.checkpoint import load_state_dict_into, model_state_dict

    model, _, postprocessor = build_model(cfg.model)
    state_dict = model_state_dict(ckpt, weights)
    require_finite_weights(state_dict, weights)
    load_state_dict_into(model, state_dict, weights)
    return model.to(device), postprocessor


def require_finite_weights(state_dict: dict[str, torch.Tensor], weights: str) -> None:
    """A CheckpointError naming the tensors that hold NaN or Inf: such a model scores and draws nothing real."""
    import torch

    from detr.errors import CheckpointError

    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"checkpoint {weights}: {len(bad)} tensors hold NaN or Inf ({', '.join(bad[:3])}"
            f"{', ...' if len(bad) > 3 else ''}); the run diverged before it was saved: use an earlier "
            "checkpoint, or retrain with the gradient watchdog (--on-anomaly rollback)"
        )


def require_finite_detections(detections: np.ndarray, weights: str) -> None:
    """A CheckpointError when the model's outputs are not finite (its weights are, yet it overflows)."""
    import numpy as np

    from detr.errors import CheckpointError

    if len(detections) and not bool(np.isfinite(detections).all()):
        bad = int((~np.isfinite(detections)).any(axis=1).sum())
        raise CheckpointError(
            f"checkpoint {weights}: {bad} of {len(detections)} detections have NaN or Inf boxes or scores; the "
            "model overflows on these images (try without --amp, or an earlier checkpoint)"
        )


def checked_figure_path(options: EvaluateOptions) -> Path | None:
    """--out as a path, refused before any work unless it names a .png or .svg file and matplotlib is there;
    --threshold in [0, 1]."""
    from pathlib import Path

    from detr.errors import ConfigError

    if options.threshold is not None and not 0.0 <= options.threshold <= 1.0:
        raise ConfigError(f"--threshold {options.threshold}: give a score between 0 and 1 (or leave it out)")
    if options.out is None:
        return None
    out = Path(options.out)
    if out.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"--out {options.out}: give a .png or .svg file name")
    from detrdoctor.extras import require

    require("matplotlib", "plot", "matplotlib", "evaluate --out")  # before the evaluation, not after it
    return out


def analyse_detections(
    coco: Any,
    detections: np.ndarray,
    image_ids: list[int],
    names: dict[int, str],
    sections: set[str],
    threshold: float | None,
) -> dict[str, Any]:
    """One COCOeval, its matching at IoU 0.5, and from them the requested sections, keyed as in --json:
    "per_class", "pr_curves", "confusion", "errors" (with "error_findings"), plus the headline "stats" and, for
    the figure, the best-F1 "points"."""
    from rich.console import Console

    from detr.engine.coco_matching import coco_matching
    from detr.engine.confusion import confusion_matrix
    from detr.engine.evaluate import accumulated_cocoeval, per_class_ap, summary_stats
    from detr.engine.precision_recall import best_f1_points, pr_curves, score_thresholds
    from detrdoctor.predictions.error_types import judge_errors

    coco_eval = accumulated_cocoeval(coco, detections, image_ids)  # one evaluation for every section
    stats = summary_stats(coco_eval)
    matching = coco_matching(coco_eval, 0.5)
    points = best_f1_points(matching)
    result: dict[str, Any] = {"stats": stats, "points": points}
    if "per_class" in sections:
        result["per_class"] = [row | points[row["id"]] for row in per_class_ap(coco_eval, names)]
    if "pr" in sections:
        result["pr_curves"] = pr_curves(coco_eval)
    if "confusion" in sections:
        thresholds = score_thresholds(points) if threshold is None else dict.fromkeys(points, threshold)
        confusion = confusion_matrix(coco, detections, matching, thresholds)
        result["confusion"] = confusion | {
            "names": [names.get(c, str(c)) if isinstance(c, int) else c for c in confusion["categories"]]
        }
    if "errors" in sections:
        from detr.engine.tide import error_costs

        with Console(stderr=True).status("re-scoring AP50 with each of TIDE's six error types fixed in turn"):
            result["errors"] = error_costs(coco, detections, image_ids, matching, stats["AP50"] or 0.0)
        result["error_findings"] = judge_errors(result["errors"])
    return result


def run_evaluate(options: EvaluateOptions) -> int:
    """`detrdoctor evaluate`: COCO box AP of a checkpoint."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from detr.checkpoint import category_names
    from detr.config import AUTO, device_batch_size
    from detr.data import build_dataset, check_dataset, resolve_num_classes
    from detr.engine.device import resolve_device
    from detr.engine.evaluate import coco_box_stats, predict_detections
    from detr.engine.loaders import build_eval_loader
    from detrdoctor.commands.common import announce_layout, data_flags

    out = checked_figure_path(options)
    overrides = {
        "data": {"coco_path": options.coco_path, "num_workers": options.num_workers, **data_flags(options)},
        "train": {"batch_size": options.batch_size, "device": options.device},
    }
    cfg, ckpt = config_for_weights(options.weights, options.profile, overrides)
    announce_layout(cfg)
    if cfg.model.num_classes == AUTO:  # neither the profile nor the weights fixed it
        resolve_num_classes(cfg)
    device = resolve_device(cfg.train.device)
    check_dataset(cfg.data, "val")
    dataset = build_dataset(cfg.data, "val", train=False)
    model, postprocessor = checkpoint_model(cfg, ckpt, options.weights, device)
    ema = "model_ema" in ckpt  # a run trained with a weight average is scored by it, as during training
    loader = build_eval_loader(dataset, cfg.data, device_batch_size(cfg.train), device=device)
    with torch.inference_mode():
        detections, image_ids = predict_detections(model, postprocessor, loader, device)
    require_finite_detections(detections, options.weights)
    names = category_names(ckpt, dataset.coco)
    analysis: dict[str, Any] = {}
    if options.sections and len(detections):
        analysis = analyse_detections(dataset.coco, detections, image_ids, names, options.sections, options.threshold)
        stats = analysis["stats"]
    else:
        stats = coco_box_stats(dataset.coco, detections, image_ids)
    breakdown = None
    if options.breakdown:
        from detr.engine.error_breakdown import error_breakdown
        from detrdoctor.predictions.ap_breakdown import judge_breakdown

        with Console(stderr=True).status("re-scoring the detections at 5 IoU thresholds and without labels"):
            breakdown = error_breakdown(dataset.coco, detections, image_ids)
        breakdown["findings"] = judge_breakdown(breakdown)
    which = " (its EMA weights)" if ema else ""
    drawn = out is not None and "confusion" in analysis  # no detections: nothing to draw
    if out is not None and drawn:
        from detrdoctor.predictions.eval_figure import draw_evaluation

        out.parent.mkdir(parents=True, exist_ok=True)
        draw_evaluation(
            out,
            analysis["pr_curves"],
            analysis["points"],
            analysis["confusion"],
            names,
            f"{options.weights}{which} on {len(dataset)} images: AP50 {stats['AP50'] or 0:.3f}",
        )
    sections = {k: v for k, v in analysis.items() if k not in ("stats", "points")}
    if options.json_output:
        report = {"weights": options.weights, "ema": ema, "images": len(dataset), **stats}
        report |= ({} if breakdown is None else {"breakdown": breakdown}) | sections
        if out is not None:
            report["figure"] = str(out) if drawn else None
        print(json.dumps(report))
        return 0
    console = Console()
    table = Table(title=f"COCO box AP — {options.weights}{which} on {len(dataset)} images")
    for name in stats:
        table.add_column(name, justify="right")
    table.add_row(*("—" if v is None else f"{v:.3f}" for v in stats.values()))
    console.print(table)
    if "per_class" in analysis:
        render_per_class(console, analysis["per_class"], analysis.get("pr_curves"))
    if breakdown is not None:
        from detrdoctor.predictions.ap_breakdown import render_breakdown

        render_breakdown(console, breakdown)
    if "confusion" in analysis and (options.confusion or options.breakdown):
        from detrdoctor.predictions.confusion_table import render_confusion

        threshold = "each class's best-F1 threshold" if options.threshold is None else f"{options.threshold}"
        render_confusion(console, analysis["confusion"], names, threshold)
    if "errors" in analysis:
        from detrdoctor.predictions.error_types import render_errors

        render_errors(console, analysis["errors"], analysis["error_findings"])
    if out is not None:
        console.print(
            f"wrote [bold]{out}[/] (precision–recall per class, confusion matrix)"
            if drawn
            else f"no figure: no detections to draw ({out} not written)",
            soft_wrap=True,
        )
    return 0


def render_per_class(console: Console, per_class: list[dict[str, Any]], curves: dict[str, Any] | None = None) -> None:
    """One row per category: id, name, AP and AP50, then precision, recall and F1 at the best-F1 threshold (IoU
    0.5), and with `curves` the precision–recall curve as a sparkline (— where undefined)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from detrdoctor.commands.plot import resampled
    from detrdoctor.dashboard.render import sparkline

    table = Table(
        title="AP per class; precision, recall and F1 at its best-F1 score threshold (IoU 0.5)",
        title_justify="left",
        box=box.SIMPLE,
    )
    for name in ("id", "name", "AP", "AP50", "prec", "recall", "F1", "score ≥"):
        table.add_column(name, justify="left" if name == "name" else "right", no_wrap=True)
    curve_of = {}
    if curves is not None:
        table.add_column("P over R", no_wrap=True)
        curve_of = dict(zip(curves["categories"], curves["precision"]))
    for row in per_class:
        cells: list[str | Text] = [str(row["id"]), escape(row["name"])]
        cells += ["—" if row[k] is None else f"{row[k]:.3f}" for k in ("AP", "AP50", "precision", "recall", "f1")]
        cells.append("—" if row["threshold"] is None else f"{row['threshold']:.2f}")
        if curves is not None:
            curve = curve_of.get(row["id"])
            trend = "" if curve is None else sparkline(resampled(curve, CURVE_WIDTH), CURVE_WIDTH)
            cells.append(Text(trend, style="cyan"))
        table.add_row(*cells)
    console.print(table)
