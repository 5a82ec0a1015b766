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

from detr.engine.callbacks import Callback
from detrdoctor.triage import triage_check

if TYPE_CHECKING:
    from rich.console import Console

    from detr.config import RunConfig
    from detr.engine.trainer import Trainer

PASS_AP50 = 0.9  # memorised: nearly every object found at IoU 0.5 on the images it trained on
STUCK = 0.5  # a loss term that ends above half its start has not learned
STILL = 0.95  # a total loss that ends above this share of its start has not moved at all
HEAD = 10  # step records averaged for a term's start and end (single steps are noisy)
CLASS_ERROR_STUCK = 50.0  # % of matched queries still given the wrong class at the end
TERMS = ("loss_ce", "loss_bbox", "loss_giou", "class_error")
NONFINITE_KINDS = ("nonfinite_loss", "nonfinite_grad", "nonfinite_op")


def pick_images(coco: Any, count: int) -> list[int]:
    """The first `count` training images (by id) with at least one usable box: an empty image teaches nothing."""
    chosen = []
    for image_id in sorted(coco.imgs):
        anns = coco.imgToAnns.get(image_id, [])
        if any(not a.get("iscrowd", 0) and a["category_id"] in coco.cats and min(a["bbox"][2:]) > 0 for a in anns):
            chosen.append(image_id)
            if len(chosen) == count:
                break
    return chosen


def write_subset(cfg: RunConfig, count: int, folder: Path) -> tuple[Path, list[int]]:
    """A COCO annotation file of `count` training images (files stay where they are) and their ids."""
    from detr.data.annotations import load_coco, split_paths
    from detr.data.root import dataset_root
    from detr.errors import DataError

    _, ann_file = split_paths(cfg.data, dataset_root(cfg.data), "train")
    coco = load_coco(ann_file)
    ids = pick_images(coco, count)
    if not ids:
        raise DataError(f"{ann_file}: no training image has a usable box (non-crowd, known category, positive size)")
    chosen = set(ids)
    subset = {
        "images": [coco.imgs[i] for i in ids],
        "annotations": [a for a in coco.dataset["annotations"] if a["image_id"] in chosen],
        "categories": coco.dataset["categories"],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "annotations.json"
    path.write_text(json.dumps(subset))
    return path, ids


def overfit_config(cfg: RunConfig, subset: Path, images: int, steps: int, folder: Path) -> RunConfig:
    """The run's config on the subset: no augmentation, constant lr, raw weights, eval once at the end."""
    test = copy.deepcopy(cfg)
    d, t = test.data, test.train
    d.train_annotations = d.val_annotations = str(subset.resolve())
    d.val_split = d.train_split
    d.train_scales, d.hflip, d.crop_probability = [d.val_size], False, 0.0
    d.aspect_ratio_grouping = False
    t.batch_size = min(images, t.batch_size)
    t.epochs = math.ceil(steps / math.ceil(images / t.batch_size))
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

    def on_train_start(self, trainer: Trainer) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("overfit", total=trainer.cfg.train.max_steps)

    def on_step_end(self, trainer: Trainer, ctx: Any, record: dict[str, Any] | None) -> None:
        loss = record.get("loss") if record else None
        text = f"overfit · loss {loss:.3f}" if isinstance(loss, float) and math.isfinite(loss) else "overfit"
        self.progress.update(self.task, advance=1, description=text)

    def on_eval_start(self, trainer: Trainer) -> None:
        self.progress.update(self.task, description="overfit · scoring")

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.progress.stop()


def run_overfit(cfg: RunConfig, subset: Path, ids: list[int], steps: int, folder: Path,
                console: Console) -> tuple[dict[str, Any], Trainer | None]:
    """Train on the images of `subset` (see `write_subset`) for `steps` steps and score them on themselves:
    (facts, the trainer, for drawing its predictions).

    Facts: images, steps, image_ids, ap50 (None when no evaluation ran), records (step records),
    events (the run's events) and error (the first line of a crash, else ""). A crash is a finding, not an
    abort: ids past num_classes, for one, fail inside the loss.
    """
    from detr.engine.metrics import read_metrics
    from detr.engine.trainer import Trainer
    from detr.errors import DetrError
    from detrdoctor.watchdog import GradientWatchdog

    test = overfit_config(cfg, subset, len(ids), steps, folder)
    trainer, error, ap50 = None, "", None
    try:
        trainer = Trainer(test, callbacks=[GradientWatchdog(test.watchdog), OverfitProgress(console)])
        summary = trainer.fit()
        ap50 = (summary.get("last_eval") or {}).get("AP50")
    except DetrError:
        raise
    except Exception as e:  # noqa: BLE001 - the crash is the diagnosis
        error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    finally:
        (folder / "checkpoint.pth").unlink(missing_ok=True)  # hundreds of MB nobody needs: the look has drawn it
    metrics = folder / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.is_file() else []
    facts = {"images": len(ids), "steps": steps, "image_ids": ids, "ap50": ap50, "error": error,
             "records": [r for r in records if r.get("type") == "step"],
             "events": [r for r in records if r.get("type") == "event"]}
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
    return {"images": facts["images"], "steps": facts["steps"], "ap50": facts["ap50"],
            "loss_start": loss_start, "loss_end": loss_end, "terms": terms}


def stuck(start: float | None, end: float | None) -> bool:
    return start is not None and end is not None and end > STUCK * start


def judge_overfit(facts: dict[str, Any], cfg: RunConfig) -> list[dict[str, str]]:
    """overfit.fit, overfit.labels, overfit.boxes and overfit.finite from the overfit run's records."""
    s = "overfit"
    n, steps, ap50 = facts["images"], facts["steps"], facts["ap50"]
    records, events = facts["records"], facts["events"]
    lr_fix = f"--lr {cfg.train.lr / 10:g} (and --lr-backbone {cfg.train.lr_backbone / 10:g})"
    if facts["error"]:
        return [triage_check(s, "overfit.fit", "fail", f"crashed after {len(records)} steps", f"AP50 ≥ {PASS_AP50}",
                             "fix the ✗ data rows first, then rerun triage",
                             f"training on {n} images crashed: {facts['error']}")]
    checks = []
    nonfinite = [e for e in events if e.get("kind") in NONFINITE_KINDS]
    if nonfinite:
        first = nonfinite[0]
        amp = cfg.train.amp != "off"
        checks.append(triage_check(
            s, "overfit.finite", "fail", f"{len(nonfinite)} non-finite steps, first at {first['step']}",
            "none", f"{lr_fix}" + (" or --amp off" if amp else ""),
            f"the watchdog's {first['kind']} event: {first['message']}; a learning rate too high"
            + (f" or {cfg.train.amp} overflow" if amp else "") + " usually makes the loss blow up"))
    else:
        checks.append(triage_check(s, "overfit.finite", "pass", "every step finite", "none"))

    loss_start, loss_end = term_ends(records, "loss")
    ce, error = term_ends(records, "loss_ce"), term_ends(records, "class_error")
    bbox, giou = term_ends(records, "loss_bbox"), term_ends(records, "loss_giou")
    moved = loss_start is None or loss_end is None or loss_end < STILL * loss_start
    labels_stuck = stuck(*ce) or (error[1] is not None and error[1] >= CLASS_ERROR_STUCK)
    boxes_stuck = stuck(*bbox) or stuck(*giou)
    fits = ap50 is not None and ap50 >= PASS_AP50
    found = f"AP50 {ap50:.3f} on {n} images after {steps} steps" if ap50 is not None else "not scored"
    if fits:
        checks.append(triage_check(s, "overfit.fit", "pass", found, f"AP50 ≥ {PASS_AP50}"))
    elif not moved and not nonfinite:
        checks.append(triage_check(
            s, "overfit.fit", "fail", found, f"AP50 ≥ {PASS_AP50}",
            "check lr > 0 and that parameters train (lr_backbone, frozen layers)",
            f"nothing moves: the loss went from {_num(loss_start)} to {_num(loss_end)}; frozen parameters or a "
            "zero learning rate"))
    else:
        checks.append(triage_check(
            s, "overfit.fit", "fail", found, f"AP50 ≥ {PASS_AP50}",
            f"--steps {steps * 2}" if not (labels_stuck or boxes_stuck or nonfinite) else "see the rows below",
            f"the model did not memorise {n} images: a healthy DETR does"
            + ("; the losses still fall, so it may need more steps" if not (labels_stuck or boxes_stuck) else "")))
    checks.append(triage_check(
        s, "overfit.labels", "fail" if labels_stuck and not fits else "pass",
        f"loss_ce {_span(ce)}, class_error {_span(error, '.0f')}", f"loss_ce below {STUCK:.0%} of its start",
        "check category ids against num_classes (data rows) and eos_coef (schedule.eos_coef)",
        "the classifier does not learn the labels: category ids past num_classes or colliding with the "
        "no-object class, or an eos_coef that drowns the objects, usually"))
    checks.append(triage_check(
        s, "overfit.boxes", "fail" if boxes_stuck and not fits else "pass",
        f"loss_bbox {_span(bbox)}, loss_giou {_span(giou)}", f"both below {STUCK:.0%} of their start",
        "look at the drawn samples: boxes must sit on the objects (box format, image size/EXIF, transforms)",
        "the box regression does not learn: boxes in another format ([x1, y1, x2, y2] instead of COCO's "
        "[x, y, w, h]), sizes that do not match the images, or transforms that move images but not boxes"))
    return checks


def _num(value: float | None, spec: str = ".3f") -> str:
    return "?" if value is None else format(value, spec)


def _span(ends: tuple[float | None, float | None], spec: str = ".3f") -> str:
    return f"{_num(ends[0], spec)} → {_num(ends[1], spec)}"
