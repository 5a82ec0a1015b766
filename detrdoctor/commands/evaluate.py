"""`detrdoctor evaluate`: COCO box AP of a checkpoint, and with --breakdown what holds it down."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from rich.console import Console, JustifyMethod
    from torch import nn

    from detr.config import RunConfig


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

    ckpt = load_checkpoint_file(weights)
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


def checkpoint_model(
    cfg: RunConfig, ckpt: dict[str, Any], weights: str, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """The checkpoint's weights (its EMA when it has one) in the model `cfg` builds, on `device`, and the
    post-processor: what evaluate and predict both score with."""
    from detr import build_model
    from detr.checkpoint import load_state_dict_into, model_state_dict

    model, _, postprocessor = build_model(cfg.model)
    load_state_dict_into(model, model_state_dict(ckpt, weights), weights)
    return model.to(device), postprocessor


def run_evaluate(options: EvaluateOptions) -> int:
    """`detrdoctor evaluate`: COCO box AP of a checkpoint."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from detr.config import AUTO
    from detr.data import build_dataset, check_dataset, resolve_num_classes
    from detr.engine.device import resolve_device
    from detr.engine.evaluate import coco_box_stats, predict_detections
    from detr.engine.loaders import build_eval_loader
    from detrdoctor.commands.common import announce_layout, data_flags

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
    loader = build_eval_loader(dataset, cfg.data, cfg.train.batch_size, device=device)
    with torch.inference_mode():
        detections, image_ids = predict_detections(model, postprocessor, loader, device)
    per_class = None
    if options.per_class and len(detections):
        from detr.checkpoint import category_names
        from detr.engine.evaluate import (
            accumulated_cocoeval,
            per_class_ap,
            summary_stats,
        )

        coco_eval = accumulated_cocoeval(dataset.coco, detections, image_ids)  # one evaluation for both
        stats = summary_stats(coco_eval)
        per_class = per_class_ap(coco_eval, category_names(ckpt, dataset.coco))
    else:
        stats = coco_box_stats(dataset.coco, detections, image_ids)
    breakdown = None
    if options.breakdown:
        from detr.engine.error_breakdown import error_breakdown
        from detrdoctor.ap_breakdown import judge_breakdown

        with Console(stderr=True).status("re-scoring the detections at 5 IoU thresholds and without labels"):
            breakdown = error_breakdown(dataset.coco, detections, image_ids)
        breakdown["findings"] = judge_breakdown(breakdown)
    if options.json_output:
        extra = ({} if breakdown is None else {"breakdown": breakdown}) | (
            {} if per_class is None else {"per_class": per_class}
        )
        print(json.dumps({"weights": options.weights, "ema": ema, "images": len(dataset), **stats, **extra}))
        return 0
    console = Console()
    which = " (its EMA weights)" if ema else ""
    table = Table(title=f"COCO box AP — {options.weights}{which} on {len(dataset)} images")
    for name in stats:
        table.add_column(name, justify="right")
    table.add_row(*("—" if v is None else f"{v:.3f}" for v in stats.values()))
    console.print(table)
    if per_class is not None:
        render_per_class(console, per_class)
    if breakdown is not None:
        from detrdoctor.ap_breakdown import render_breakdown

        render_breakdown(console, breakdown)
    return 0


def render_per_class(console: Console, per_class: list[dict[str, Any]]) -> None:
    """One row per category: id, name, AP and AP50 (— where the scored images hold none of it)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="AP per class")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("id", "right"),
        ("name", "left"),
        ("AP", "right"),
        ("AP50", "right"),
    )
    for name, justify in columns:
        table.add_column(name, justify=justify)
    for row in per_class:
        table.add_row(
            str(row["id"]), escape(row["name"]), *("—" if row[k] is None else f"{row[k]:.3f}" for k in ("AP", "AP50"))
        )
    console.print(table)
