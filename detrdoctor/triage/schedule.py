"""Schedule and hyper-parameters: pure rules over the resolved config and a few dataset facts.

Facts (see `schedule_facts`): train_images, objects_per_image (mean usable boxes), synthetic (the built-in
shapes), world_size, and bf16 (whether the device supports it; None when unknown). Every threshold below
says where it comes from: the DETR paper (Carion et al. 2020) and the maintainers' answers in
facebookresearch/detr issues.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from detrdoctor.triage import triage_check
from detrdoctor.verdict import Check

if TYPE_CHECKING:
    from detr.config import RunConfig

# detr#22 (fmassa): "as a rule of thumb ... at least 300k training steps" for a DETR whose transformer
# starts from scratch (the paper's 500 COCO epochs at batch 64 are ~925k steps; 300 epochs ~550k).
SCRATCH_STEPS = 300_000
# detr#341: fine-tuning a DETR checkpoint takes 40-120 epochs, "at least 30".
FINETUNE_EPOCHS = 30
# The demo profile reaches AP50 ≈ 0.5 on the synthetic shapes within ~1,000 steps and ~0.6 after its 1,912
# (seed 0: 0.550 at step 956, 0.595 at the end; detrdoctor/profiles/demo.toml).
SYNTHETIC_STEPS = 1_000
# detr#125 (alcinos): from scratch "we had success with 10-15k [images] but never tried smaller"; 2k gave zeros.
SCRATCH_MIN_IMAGES = 10_000
TOO_FEW = 10  # below needed / TOO_FEW the run ends with AP ≈ 0 (detr#22: 10 of ~1300 needed epochs)
# The paper: AdamW at lr 1e-4 (backbone 1e-5) for a total batch of 64. detr#48 (fmassa): the same values
# worked for every batch size with Adam; linear scaling is "too aggressive, the model will probably not train";
# square-root scaling "could potentially work". detr#22: 1e-3 "is too large and doesn't work well".
PAPER_LR, PAPER_LR_BACKBONE, PAPER_BATCH = 1e-4, 1e-5, 64
LR_WARN, LR_FAIL = 2.0, 10.0  # × the highest reasonable lr (the demo runs 2e-4 at batch 8, from scratch)
PAPER_CLIP = 0.1  # the paper clips the gradient norm at 0.1
# The no-object class weighs eos_coef per spare query; the paper's 0.1 × ~93 spare of 100 queries balances
# COCO's ~7 objects per image (ratio ~1.3). detrdoctor/profiles/demo.toml: with 6 queries 0.1 was too low (duplicates).
EOS_LOW, EOS_HIGH = 1 / 3, 10.0
FINETUNE_URL = "https://dl.fbaipublicfiles.com/detr/detr-r50-e632da11.pth"


def schedule_facts(data_summary: Mapping[str, Any], device: str) -> dict[str, Any]:
    """The facts the rules need: dataset counts (from `detr.data.check_dataset`), world size, bf16 support."""
    import torch

    images = data_summary.get("images", 0)
    bf16 = None
    if device.startswith("cuda") and torch.cuda.is_available():
        bf16 = torch.cuda.is_bf16_supported()
    return {
        "train_images": images,
        "objects_per_image": data_summary.get("usable_annotations", 0) / max(images, 1),
        "synthetic": data_summary.get("layout") == "synthetic",
        "bf16": bf16,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
    }


def steps_per_epoch(cfg: RunConfig, facts: dict[str, Any]) -> int:
    """Optimizer steps per epoch (the sampler drops the last incomplete batch)."""
    from detr.config import optimizer_batch_size

    return max(1, facts["train_images"] // (optimizer_batch_size(cfg.train) * facts["world_size"]))


def total_steps(cfg: RunConfig, facts: dict[str, Any]) -> int:
    steps = cfg.train.epochs * steps_per_epoch(cfg, facts)
    return min(steps, cfg.train.max_steps) if cfg.train.max_steps else steps


def steps_needed(cfg: RunConfig, facts: dict[str, Any]) -> tuple[int, str]:
    """(steps, why): what DETR needs from this starting point."""
    if facts["synthetic"]:
        return SYNTHETIC_STEPS, "synthetic shapes: the demo profile learns them in ~1.9k"
    if cfg.train.weights:
        return FINETUNE_EPOCHS * steps_per_epoch(cfg, facts), f"fine-tuning DETR weights: ≥ {FINETUNE_EPOCHS} epochs"
    if cfg.model.backbone_weights != "none":
        return SCRATCH_STEPS, "a transformer from scratch on a pretrained backbone: ~300k"
    return SCRATCH_STEPS, "no pretrained weights at all: ~300k, more in practice"


def judge_schedule(cfg: RunConfig, facts: dict[str, Any]) -> list[Check]:
    return [
        rule_steps(cfg, facts),
        rule_lr_drop(cfg, facts),
        rule_lr(cfg, facts),
        rule_lr_backbone(cfg),
        rule_clip(cfg),
        rule_eos_coef(cfg, facts),
        rule_amp(cfg, facts),
    ]


def rule_steps(cfg: RunConfig, facts: dict[str, Any]) -> Check:
    total, (needed, why) = total_steps(cfg, facts), steps_needed(cfg, facts)
    found = f"{total:,} steps ({cfg.train.epochs} epochs × {steps_per_epoch(cfg, facts):,})"
    expected = f"≥ {needed:,} ({why})"
    if total >= needed:
        return triage_check("schedule", "schedule.steps", "pass", found, expected)
    small = not facts["synthetic"] and not cfg.train.weights and facts["train_images"] < SCRATCH_MIN_IMAGES
    epochs = math.ceil(needed / steps_per_epoch(cfg, facts))
    fix = (
        f"fine-tune the official checkpoint: --weights {FINETUNE_URL}"
        if small
        else f"--epochs {epochs} with [train] lr_drop = {epochs * 2 // 3} in the profile"
    )
    message = (
        f"{total:,} optimizer steps is {share(total, needed)} of what DETR needs; a short run ends with AP ≈ 0"
        + (
            f"; from scratch on {facts['train_images']:,} images DETR rarely learns at all (the maintainers "
            f"saw it work from ~{SCRATCH_MIN_IMAGES:,})"
            if small
            else ""
        )
    )
    return triage_check(
        "schedule", "schedule.steps", "fail" if total * TOO_FEW < needed else "warn", found, expected, fix, message
    )


def share(part: float, whole: float) -> str:
    """'7%', or '0.06%' where whole percents would say 0."""
    return f"{part / whole:.0%}" if part >= whole / 100 else f"{part / whole:.2%}"


def rule_lr_drop(cfg: RunConfig, facts: dict[str, Any]) -> Check:
    epochs = math.ceil(total_steps(cfg, facts) / steps_per_epoch(cfg, facts))
    drop, found = cfg.train.lr_drop, f"lr_drop {cfg.train.lr_drop} with {epochs} epochs"
    expected = f"< {epochs} (the paper: 200 of 300)"
    fix = f"[train] lr_drop = {max(1, epochs * 2 // 3)} in the profile"
    if drop > epochs:
        return triage_check(
            "schedule",
            "schedule.lr_drop",
            "fail",
            found,
            expected,
            fix,
            "the learning rate never drops: the run ends before epoch lr_drop (the paper's drop "
            "gives several AP points); usually --epochs was lowered and lr_drop kept",
        )
    if drop == epochs:
        return triage_check(
            "schedule",
            "schedule.lr_drop",
            "warn",
            found,
            expected,
            fix,
            "the drop would come after the last epoch: a constant learning rate",
        )
    return triage_check("schedule", "schedule.lr_drop", "pass", found, expected)


def lr_band(batch: int) -> tuple[float, float]:
    """(square-root-scaled paper lr, the highest reasonable lr) for a total batch size."""
    scaled = PAPER_LR * math.sqrt(batch / PAPER_BATCH)
    return scaled, max(scaled, PAPER_LR)


def rule_lr(cfg: RunConfig, facts: dict[str, Any]) -> Check:
    from detr.config import optimizer_batch_size

    batch = optimizer_batch_size(cfg.train) * facts["world_size"]  # the optimizer's batch: accumulation included
    scaled, top = lr_band(batch)
    lr = cfg.train.lr
    found, expected = f"{lr:g} at total batch {batch}", f"{scaled:.2g} (√-scaled) … {LR_WARN * top:.2g}"
    fix = f"--lr {scaled:.2g}"
    why = "the paper uses 1e-4 at total batch 64 and keeps it at other sizes; scale with √(batch/64), never linearly"
    if lr >= LR_FAIL * top:
        return triage_check(
            "schedule",
            "schedule.lr",
            "fail",
            found,
            expected,
            fix,
            f"{lr / top:.0f}× the highest reasonable lr: DETR diverges or learns nothing; {why}",
        )
    if lr > LR_WARN * top:
        return triage_check(
            "schedule",
            "schedule.lr",
            "warn",
            found,
            expected,
            fix,
            f"{lr / top:.1f}× the highest reasonable lr (detr#48: 3e-4 at 24 GPUs gave AP 0); {why}",
        )
    if lr < scaled / LR_FAIL:
        return triage_check(
            "schedule",
            "schedule.lr",
            "warn",
            found,
            expected,
            fix,
            f"{scaled / lr:.0f}× below the √-scaled lr: DETR, already slow, learns slower still",
        )
    return triage_check("schedule", "schedule.lr", "pass", found, expected)


def rule_lr_backbone(cfg: RunConfig) -> Check:
    t = cfg.train
    pretrained = cfg.model.backbone_weights != "none" or bool(t.weights)
    found, expected = f"{t.lr_backbone:g} with lr {t.lr:g}", f"≈ lr / 10 ({t.lr / 10:g}) for pretrained weights"
    if not pretrained:
        return triage_check("schedule", "schedule.lr_backbone", "pass", found, "any (backbone from scratch)")
    if t.lr_backbone > t.lr / 2:
        return triage_check(
            "schedule",
            "schedule.lr_backbone",
            "warn",
            found,
            expected,
            f"--lr-backbone {t.lr * PAPER_LR_BACKBONE / PAPER_LR:g}",
            "a pretrained backbone at the transformer's lr loses its features early on; the paper trains it 10× slower",
        )
    return triage_check("schedule", "schedule.lr_backbone", "pass", found, expected)


def rule_clip(cfg: RunConfig) -> Check:
    clip = cfg.train.clip_max_norm
    found, expected = "off" if clip == 0 else f"max norm {clip:g}", f"max norm {PAPER_CLIP} (the paper)"
    if clip == 0:
        return triage_check(
            "schedule",
            "schedule.clip",
            "warn",
            found,
            expected,
            f"--clip-max-norm {PAPER_CLIP}",
            "without clipping one bad batch can throw the transformer off (loss spikes, NaN)",
        )
    return triage_check("schedule", "schedule.clip", "pass", found, expected)


def rule_eos_coef(cfg: RunConfig, facts: dict[str, Any]) -> Check:
    m, objects = cfg.model, facts["objects_per_image"]
    spare = m.num_queries - objects
    if objects <= 0 or spare <= 0:
        return triage_check(
            "schedule", "schedule.eos_coef", "skip", message="no objects per image to weigh against (see the data rows)"
        )
    balanced = objects / spare  # no-object weight × spare queries = the objects' weight
    found = (
        f"{m.eos_coef:g} with {m.num_queries} queries, {objects:.1f} objects per image "
        f"({spare / m.num_queries:.0%} no-object)"
    )
    expected = f"≈ {balanced:.2g} ({EOS_LOW * balanced:.2g} … {EOS_HIGH * balanced:.2g})"
    ratio, fix = m.eos_coef / balanced, f"[model] eos_coef = {balanced:.2g}"
    if ratio < EOS_LOW:
        return triage_check(
            "schedule",
            "schedule.eos_coef",
            "warn",
            found,
            expected,
            fix,
            "the spare queries' no-object class weighs too little: they keep firing confident "
            "duplicates (the demo profile measured this with 6 queries at 0.1)",
        )
    if ratio > EOS_HIGH:
        return triage_check(
            "schedule",
            "schedule.eos_coef",
            "warn",
            found,
            expected,
            fix,
            "the no-object class outweighs the objects: the model learns to predict nothing",
        )
    return triage_check("schedule", "schedule.eos_coef", "pass", found, expected)


def rule_amp(cfg: RunConfig, facts: dict[str, Any]) -> Check:
    amp, found = cfg.train.amp, f"amp {cfg.train.amp}"
    if amp == "fp16" and facts["bf16"]:
        return triage_check(
            "schedule",
            "schedule.amp",
            "warn",
            found,
            "bf16 on this GPU",
            "--amp bf16",
            "fp16 overflows past 65504 and needs a loss scaler that skips steps; this GPU has bf16, "
            "with float32's range, at the same speed",
        )
    return triage_check("schedule", "schedule.amp", "pass", found, "bf16 or off" if facts["bf16"] else "any")
