"""The overfit test: can this model, with this data pipeline and these settings, memorise a few training images?

A healthy DETR learns K images by heart in a few hundred steps; when it cannot, no schedule will save the run,
and which loss term stays put says why. The test reuses everything: a K-image annotation file (images
referenced in place), a copy of the run's config without augmentation, and the real `Trainer` with the
gradient watchdog in `warn` mode, evaluated once at the end on the same images.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detr.criterion import LOSS_TERMS
from detr.engine.callbacks import Callback, StepContext, TrainerView
from detr.engine.metrics import StepRecord
from detrdoctor.fmt import number
from detrdoctor.triage import triage_check
from detrdoctor.verdict import Check, fail_or_pass

if TYPE_CHECKING:
    from rich.console import Console

    from detr.config import RunConfig
    from detr.data.split import SplitData
    from detr.engine.trainer import Trainer

PASS_AP50 = 0.9  # memorised: nearly every object found at IoU 0.5 on the images it trained on
STUCK = 0.5  # a loss term that ends above half its start has not learned
STILL = 0.95  # a total loss that ends above this share of its start has not moved at all
HEAD = 10  # step records averaged for a term's start and end (single steps are noisy)
CLASS_ERROR_STUCK = 50.0  # % of matched queries still given the wrong class at the end
# Fitted targets: matched boxes at mean GIoU ≥ 0.85 with the right class nearly always score AP50 ≈ 1 on the
# same images. When they do not, evaluation compares with other boxes than training learned.
FITTED_GIOU_LOSS, FITTED_CLASS_ERROR = 0.15, 5.0
TERMS = (*LOSS_TERMS, "class_error")
NONFINITE_KINDS = ("nonfinite_loss", "nonfinite_grad", "nonfinite_op")
# The watchdog's early warnings of values growing without bound: with AdamW and normalisation layers a far
# too high lr often collapses the model with these, before (or instead of) any NaN.
RUNAWAY_KINDS = ("grad_norm_growth", "activation_growth", "overflow_forecast", "overflow_risk", "amp_skip_rate")


def pick_images(split: SplitData, count: int) -> list[int]:
    """The first `count` images (by id) of the split with at least one box training keeps: an empty one
    teaches nothing."""
    fates, image = split.fates
    with_boxes = {split.images[int(k)]["id"] for k in image[fates.usable]}
    return sorted(with_boxes)[:count]


def write_subset(cfg: RunConfig, count: int, folder: Path) -> tuple[Path, list[int]]:
    """A COCO annotation file of `count` training images (files stay where they are) and their ids."""
    from detr.data.split import load_split, training_objects_limit
    from detr.errors import DataError

    split = load_split(
        cfg.data, "train", training_objects_limit(cfg.model.num_queries, cfg.data.skip_images_over_queries)
    )
    ids = pick_images(split, count)
    if not ids:
        raise DataError(
            f"{split.source.annotations}: no training image has a usable box (non-crowd, known category, "
            "positive size inside the image)"
        )
    chosen = set(ids)
    coco = split.parsed.coco
    subset = {
        "images": [coco.imgs[i] for i in ids],
        "annotations": [a for a in split.annotations if a["image_id"] in chosen],
        "categories": split.categories,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "annotations.json"
    path.write_text(json.dumps(subset))
    return path, ids


def overfit_config(cfg: RunConfig, subset: Path, images: int, steps: int, folder: Path) -> RunConfig:
    """The run's config on the subset: no augmentation, constant lr, raw weights, eval once at the end."""
    from detr.data.layout import find_layout

    test = copy.deepcopy(cfg)
    d, t = test.data, test.train
    d.train_images = d.val_images = str(find_layout(cfg.data).train.images.resolve())
    d.train_annotations = d.val_annotations = str(subset.resolve())
    d.train_scales, d.hflip, d.crop_probability = [d.val_size], False, 0.0
    d.aspect_ratio_grouping = False
    batch = images if isinstance(t.batch_size, str) else min(images, t.batch_size)  # a few images fit any device
    t.batch_size, t.effective_batch = batch, 0
    t.epochs = math.ceil(steps / math.ceil(images / batch))
    t.max_steps = steps
    t.eval_every = t.epochs + 1  # never during training: `fit` evaluates once after the last step
    t.lr_drop = t.epochs + 1
    t.ema_decay = 0.0  # the weights that learned, not an average lagging behind them
    t.log_every = 1
    t.output_dir, t.resume = str(folder), ""
    test.watchdog.on_anomaly = "warn"  # non-finite steps are still dropped; the test wants to see them
    return test


class OverfitProgress(Callback):
    """A rich progress bar on stderr over the overfit steps, with the latest loss."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Any = None

    def on_train_start(self, trainer: TrainerView) -> None:
        from detrdoctor.progress_bar import progress_bar

        self.progress = progress_bar(self.console)
        self.progress.start()
        self.task = self.progress.add_task("overfit", total=trainer.cfg.train.max_steps)

    def on_step_end(self, trainer: TrainerView, ctx: StepContext, record: StepRecord | None) -> None:
        loss = record.get("loss") if record else None
        text = f"overfit · loss {loss:.3f}" if isinstance(loss, float) and math.isfinite(loss) else "overfit"
        self.progress.update(self.task, advance=1, description=text)

    def on_eval_start(self, trainer: TrainerView) -> None:
        self.progress.update(self.task, description="overfit · scoring")

    def on_train_end(self, trainer: TrainerView, summary: dict[str, Any]) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def run_overfit(
    cfg: RunConfig, subset: Path, ids: list[int], steps: int, folder: Path, console: Console
) -> tuple[dict[str, Any], Trainer | None]:
    """Train on the images of `subset` (see `write_subset`) for `steps` steps and score them on themselves:
    (facts, the trainer, for drawing its predictions).

    Facts: images, steps, image_ids, ap50 (None when no evaluation ran), records (step records),
    events (the run's events) and error (the first line of a crash, else ""). A failure is a finding, not
    an abort: ids past num_classes, for one, stop the trainer.
    """
    from detr.engine.metrics import read_metrics
    from detr.engine.trainer import Trainer
    from detrdoctor.watchdog import GradientWatchdog

    test = overfit_config(cfg, subset, len(ids), steps, folder)
    trainer, error, ap50 = None, "", None
    progress = OverfitProgress(console)
    try:
        # triage's own scratch run: a triage rerun into the same --out replaces it
        trainer = Trainer(test, callbacks=[GradientWatchdog(test.watchdog), progress], overwrite=True)
        summary = trainer.fit()
        ap50 = (summary.get("last_eval") or {}).get("AP50")
    except Exception as e:  # noqa: BLE001 - the crash (or a DataError the trainer stops on) is the diagnosis
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        trainer = None  # half-built or half-trained: nothing worth drawing
    finally:
        progress.close()
        (folder / "checkpoint.pth").unlink(missing_ok=True)  # hundreds of MB nobody needs: the look has drawn it
    metrics = folder / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.is_file() else []
    facts = {
        "images": len(ids),
        "steps": steps,
        "image_ids": ids,
        "ap50": ap50,
        "error": error,
        "records": [r for r in records if r.get("type") == "step"],
        "events": [r for r in records if r.get("type") == "event"],
    }
    return facts, trainer


def term_ends(records: list[dict[str, Any]], term: str) -> tuple[float | None, float | None]:
    """(start, end) of a logged term: the mean of the first and of the last HEAD finite values."""
    values = [r[term] for r in records if isinstance(r.get(term), (int, float)) and math.isfinite(r[term])]
    if not values:
        return None, None
    head = max(1, min(HEAD, len(values) // 4))
    return sum(values[:head]) / head, sum(values[-head:]) / head


def overfit_summary(facts: dict[str, Any]) -> dict[str, Any]:
    """The `overfit` object of the --json contract."""
    records = facts["records"]
    loss_start, loss_end = term_ends(records, "loss")
    terms = {t: list(term_ends(records, t)) for t in TERMS if any(t in r for r in records)}
    return {
        "images": facts["images"],
        "steps": facts["steps"],
        "ap50": facts["ap50"],
        "loss_start": loss_start,
        "loss_end": loss_end,
        "terms": terms,
    }


def stuck(start: float | None, end: float | None) -> bool:
    return start is not None and end is not None and end > STUCK * start


def judge_overfit(facts: dict[str, Any], cfg: RunConfig) -> list[Check]:
    """overfit.fit, overfit.labels, overfit.boxes and overfit.finite from the overfit run's records."""
    s = "overfit"
    n, steps, ap50 = facts["images"], facts["steps"], facts["ap50"]
    records, events = facts["records"], facts["events"]
    expected = f"AP50 ≥ {PASS_AP50}"
    if facts["error"]:
        return [
            triage_check(
                s,
                "overfit.fit",
                "fail",
                f"stopped after {len(records)} steps",
                expected,
                "fix the ✗ data rows first, then rerun triage",
                f"training on {n} images stopped: {facts['error']}",
            )
        ]
    loss_start, loss_end = term_ends(records, "loss")
    ce, error = term_ends(records, "loss_ce"), term_ends(records, "class_error")
    bbox, giou = term_ends(records, "loss_bbox"), term_ends(records, "loss_giou")
    fits = ap50 is not None and ap50 >= PASS_AP50
    labels_stuck = not fits and (stuck(*ce) or (error[1] is not None and error[1] >= CLASS_ERROR_STUCK))
    boxes_stuck = not fits and (stuck(*bbox) or stuck(*giou))
    unscored = (
        not fits
        and ap50 is not None
        and giou[1] is not None
        and giou[1] <= FITTED_GIOU_LOSS
        and error[1] is not None
        and error[1] <= FITTED_CLASS_ERROR
    )
    finite = rule_finite(events, cfg, fits)
    found = f"AP50 {ap50:.3f} on {n} images after {steps} steps" if ap50 is not None else "not scored"
    if fits:
        fit = triage_check(s, "overfit.fit", "pass", found, expected)
    elif loss_start is not None and loss_end is not None and loss_end >= STILL * loss_start:
        fit = triage_check(
            s,
            "overfit.fit",
            "fail",
            found,
            expected,
            "check lr > 0 and that parameters train (lr_backbone, frozen layers)",
            f"nothing moves: the loss went from {number(loss_start, '.3f', '?')} to "
            f"{number(loss_end, '.3f', '?')}; frozen "
            "parameters or a zero learning rate",
        )
    elif unscored:
        fit = triage_check(
            s,
            "overfit.fit",
            "fail",
            found,
            expected,
            "see overfit.boxes",
            f"it fits its training targets (loss_giou {giou[1]:.3f}, class_error {error[1]:.0f}%) yet "
            "scores low on the same images: evaluation compares with boxes training never saw",
        )
    elif labels_stuck and boxes_stuck:
        fit = triage_check(
            s,
            "overfit.fit",
            "fail",
            found,
            expected,
            "see schedule.lr and overfit.finite",
            "neither the classes nor the boxes learn: the optimisation fails as a whole, usually "
            "a learning rate far too high (the model collapses to 'no object' everywhere) or AMP",
        )
    elif labels_stuck or boxes_stuck:
        fit = triage_check(
            s,
            "overfit.fit",
            "fail",
            found,
            expected,
            "see the row below",
            f"the model did not memorise {n} images, and a healthy DETR does",
        )
    else:
        fit = triage_check(
            s,
            "overfit.fit",
            "fail",
            found,
            expected,
            f"--steps {steps * 2}",
            f"the model did not memorise {n} images yet, but every loss still falls: more steps",
        )
    both = " (both heads stuck: the cause is likely common, see overfit.fit)" if labels_stuck and boxes_stuck else ""
    labels = fail_or_pass(
        "overfit.labels",
        labels_stuck,
        f"loss_ce {_span(ce)}, class_error {_span(error, '.0f')}",
        f"loss_ce below {STUCK:.0%} of its start",
        "check category ids against num_classes (data rows) and eos_coef (schedule.eos_coef)",
        "the classifier does not learn the labels: category ids colliding with the no-object class, or an "
        "eos_coef that drowns the objects, usually" + both,
        section=s,
    )
    if unscored:
        return [
            finite,
            fit,
            labels,
            triage_check(
                s,
                "overfit.boxes",
                "fail",
                f"loss_bbox {_span(bbox)}, loss_giou {_span(giou)}, AP50 {ap50:.3f}",
                "fitted boxes score",
                "check data.box_format and look at the drawn samples: boxes must sit on the objects",
                "training clamps boxes to the image and COCOeval scores them as written: boxes past the border "
                "([x1, y1, x2, y2] stored where COCO wants [x, y, w, h], or sizes from EXIF-rotated images) are "
                "learned clamped and scored unclamped",
            ),
        ]
    boxes = fail_or_pass(
        "overfit.boxes",
        boxes_stuck,
        f"loss_bbox {_span(bbox)}, loss_giou {_span(giou)}",
        f"both below {STUCK:.0%} of their start",
        "look at the drawn samples: boxes must sit on the objects (box format, image size/EXIF, transforms)",
        "the box regression does not learn: boxes that do not match the images (sizes, EXIF rotation), or "
        "transforms that move images but not boxes" + both,
        section=s,
    )
    return [finite, fit, labels, boxes]


def rule_finite(events: list[dict[str, Any]], cfg: RunConfig, fits: bool) -> Check:
    """Non-finite steps fail; the watchdog's run-away warnings fail too when the model could not fit."""
    t = cfg.train
    fix = f"lower the lr: [train] lr = {t.lr / 10:g}, lr_backbone = {t.lr_backbone / 10:g}" + (
        ' or amp = "off"' if t.amp != "off" else ""
    )
    nonfinite = [e for e in events if e.get("kind") in NONFINITE_KINDS]
    runaway = [e for e in events if e.get("kind") in RUNAWAY_KINDS]
    cause = "a learning rate too high" + (f" or {t.amp} overflow" if t.amp != "off" else "")
    if nonfinite:
        first = nonfinite[0]
        return triage_check(
            "overfit",
            "overfit.finite",
            "fail",
            f"{len(nonfinite)} non-finite steps, first at {first['step']}",
            "none",
            fix,
            f"the watchdog's {first['kind']} event: {first['message']}; {cause}, usually",
        )
    if runaway:
        first = runaway[0]
        return triage_check(
            "overfit",
            "overfit.finite",
            "warn" if fits else "fail",
            f"{len(runaway)} run-away warnings, first at step {first['step']}",
            "none",
            fix,
            f"values head for inf/NaN: the watchdog's {first['kind']} event: {first['message']}; {cause}, usually",
        )
    return triage_check("overfit", "overfit.finite", "pass", "every step finite, no run-away values", "none")


def _span(ends: tuple[float | None, float | None], spec: str = ".3f") -> str:
    return f"{number(ends[0], spec, '?')} → {number(ends[1], spec, '?')}"
