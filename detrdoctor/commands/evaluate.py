"""`detrdoctor evaluate`: COCO box AP of a checkpoint, and with --breakdown what holds it down."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from detrdoctor.options import (
    BatchSize,
    DataRoot,
    Device,
    Json,
    NumWorkers,
    TrainAnnotations,
    TrainImages,
    ValAnnotations,
    ValImages,
    Weights,
    profile_flag,
)

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    import torch
    from rich.console import Console
    from torch import nn

    from detr.config import RunConfig


CURVE_WIDTH = 12


@dataclass(frozen=True, kw_only=True)
class EvaluateOptions:
    """The flags of `evaluate`."""

    weights: Weights
    profile: Annotated[str | None, profile_flag("the checkpoint's config, else detr-r50")] = None
    coco_path: DataRoot = None
    batch_size: BatchSize = None
    device: Device = None
    num_workers: NumWorkers = None
    breakdown: Annotated[
        bool,
        typer.Option(
            "--breakdown",
            help="Also show what holds AP down: AP by IoU, labels, loose and spare boxes, missed objects; with "
            "--confusion, --pr and --errors.",
        ),
    ] = False
    per_class: Annotated[
        bool,
        typer.Option(
            "--per-class", help="Also show each category's AP, AP50, and precision, recall and F1 at its best F1."
        ),
    ] = False
    confusion: Annotated[
        bool, typer.Option("--confusion", help="Also show the confusion matrix (IoU ≥ 0.5; categories and background).")
    ] = False
    pr: Annotated[
        bool, typer.Option("--pr", help="Also show per-class precision/recall/F1 and precision–recall curves.")
    ] = False
    errors: Annotated[
        bool, typer.Option("--errors", help="Also show TIDE's six error types: the AP50 each costs, and how many.")
    ] = False
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Score a box needs to count in the confusion matrix (default: each class's best-F1 threshold)."
        ),
    ] = None
    out: Annotated[
        str | None,
        typer.Option(
            help="Write precision–recall curves and the confusion matrix to FILE.png or .svg (the plot extra)."
        ),
    ] = None
    json_output: Json = False
    train_annotations: TrainAnnotations = None
    val_annotations: ValAnnotations = None
    train_images: TrainImages = None
    val_images: ValImages = None

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
    """COCO box AP of a checkpoint on the validation split."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from detr.checkpoint import category_names
    from detr.config import AUTO, device_batch_size
    from detr.data import build_dataset, check_dataset, resolve_num_classes
    from detr.engine.device import resolve_device
    from detr.engine.evaluate import coco_box_stats, predict_detections
    from detr.engine.loaders import build_eval_loader
    from detrdoctor.options import config_overrides
    from detrdoctor.runconfig import announce_layout, config_for_weights

    out = checked_figure_path(options)
    cfg, ckpt = config_for_weights(options.weights, options.profile, config_overrides(options))
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
