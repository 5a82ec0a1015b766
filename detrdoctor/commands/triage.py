"""`detrdoctor triage`: why doesn't my DETR learn? Data, schedule, an overfit test, a look, and a run's history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from detrdoctor.options import (
    CONFIG,
    DataRoot,
    Json,
    TrainAnnotations,
    TrainImages,
    ValAnnotations,
    ValImages,
    profile_flag,
)

if TYPE_CHECKING:
    from detr.config import RunConfig


@dataclass(frozen=True, kw_only=True)
class TriageOptions:
    """The flags of `triage`; None means "not given": the profile (or the run's config) decides."""

    profile: Annotated[str | None, profile_flag("demo, or detr-r50 with --coco-path; with --run: the run's config")] = (
        None
    )
    coco_path: DataRoot = None
    weights: Annotated[
        str | None,
        typer.Option(help="Start the overfit test from these weights (path or URL) instead of a fresh model."),
        CONFIG,
    ] = None
    run: Annotated[
        str | None, typer.Option(help="Also judge a run folder's metrics.jsonl (alone: with that run's config.toml).")
    ] = None
    images: Annotated[int, typer.Option(help="Training images the overfit test must memorise.")] = 4
    steps: Annotated[int, typer.Option(help="Steps of the overfit test (0 skips it).")] = 200
    out: Annotated[
        str | None,
        typer.Option(help="Folder for the drawn samples and the overfit run (default: triage-<timestamp>)."),
    ] = None
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N for the overfit test."), CONFIG] = "auto"
    amp: Annotated[
        str | None,
        typer.Option(help="Mixed precision of the overfit test: off, bf16 or fp16 (default: the profile's)."),
        CONFIG,
    ] = None
    json_output: Json = False
    train_annotations: TrainAnnotations = None
    val_annotations: ValAnnotations = None
    train_images: TrainImages = None
    val_images: ValImages = None


def resolve_triage_config(options: TriageOptions) -> RunConfig:
    """The profile with the flags applied; `--run` without `--profile` judges the run's own config.toml."""
    from detr.config import load_config_file, validate
    from detr.errors import ConfigError
    from detrdoctor.options import config_overrides
    from detrdoctor.runconfig import apply_flags, load_run_config

    if options.images < 1:
        raise ConfigError(f"--images {options.images}: must be at least 1")
    if options.steps < 0:
        raise ConfigError(f"--steps {options.steps}: must be ≥ 0 (0 skips the overfit test)")
    if options.run:
        run = Path(options.run).expanduser()
        if not (run / "metrics.jsonl").is_file():
            raise ConfigError(f"--run {run}: no metrics.jsonl there; pass a run folder written by `detrdoctor train`")
        if not options.profile:
            if not (run / "config.toml").is_file():
                raise ConfigError(f"--run {run}: no config.toml there; add --profile with the run's profile")
            cfg = load_config_file(run / "config.toml")
            apply_flags(cfg, config_overrides(options))
            validate(cfg)
            return cfg
    return load_run_config(options.profile, options.coco_path, config_overrides(options))


def data_checks(cfg: RunConfig) -> list[dict[str, Any]]:
    """The dataset doctor's rows (section "data"), or one skip row where this build has no doctor."""
    from detrdoctor.triage import triage_check

    try:
        from detrdoctor.datadoctor.doctor import diagnose_dataset
    except ImportError:
        return [triage_check("data", "data.doctor", "skip", message="the dataset doctor is not in this build")]
    return [{**row, "section": "data"} for row in diagnose_dataset(cfg)]


def verdict(summary: dict[str, Any], overfit_ran: bool) -> str:
    if summary["fail"]:
        return "fix the ✗ rows: this run will not learn as configured"
    if not overfit_ran:
        return "no blocker found (overfit test skipped)"
    return "no blocker; review the ! rows" if summary["warn"] else "healthy: nothing stops this model from learning"


def run_triage(options: TriageOptions) -> int:
    """Why doesn't my DETR learn? Data, schedule, an overfit test on a few images, drawn samples, a run's history.

    Exit 1 when a check fails.
    """
    from rich.console import Console

    from detr.data import check_dataset
    from detr.data.split import training_objects_limit
    from detr.engine.device import resolve_amp_dtype, resolve_device
    from detr.engine.metrics import read_metrics_checked
    from detrdoctor.runconfig import announce_layout
    from detrdoctor.triage import triage_check
    from detrdoctor.triage.history import judge_history
    from detrdoctor.triage.look import draw_predictions, draw_training_samples
    from detrdoctor.triage.overfit import (
        judge_overfit,
        overfit_summary,
        run_overfit,
        write_subset,
    )
    from detrdoctor.triage.schedule import judge_schedule, schedule_facts, steps_needed
    from detrdoctor.verdict import summarize

    cfg = resolve_triage_config(options)
    device = resolve_device(cfg.train.device)
    resolve_amp_dtype(cfg.train.amp, device)  # a bad --amp/--device pair is a flag error, not a finding
    out = Path(options.out or f"triage-{datetime.now():%Y%m%d-%H%M%S}")
    stderr = Console(stderr=True, highlight=False)
    announce_layout(cfg)
    data_summary = check_dataset(
        cfg.data, "train", training_objects_limit(cfg.model.num_queries, cfg.data.skip_images_over_queries)
    )
    checks = data_checks(cfg)
    facts = schedule_facts(data_summary, str(device))
    checks += judge_schedule(cfg, facts)

    subset, ids = write_subset(cfg, options.images, out / "overfit")
    overfit, trainer = None, None
    if options.steps:
        overfit_facts, trainer = run_overfit(cfg, subset, ids, options.steps, out / "overfit", stderr)
        checks += judge_overfit(overfit_facts, cfg)
        overfit = overfit_summary(overfit_facts)
    else:
        checks += [
            triage_check("overfit", f"overfit.{name}", "skip", message="--steps 0")
            for name in ("finite", "fit", "labels", "boxes")
        ]
    images = draw_training_samples(cfg, ids, out)
    if trainer is not None:
        images += draw_predictions(trainer, out)

    if options.run:
        records, note = read_metrics_checked(Path(options.run).expanduser() / "metrics.jsonl")
        if note:
            Console(stderr=True, highlight=False).print(f"note: {note}", soft_wrap=True, markup=False)
        checks += judge_history(records, cfg.train.lr_drop, cfg.train.epochs, steps_needed(cfg, facts))

    summary = summarize(checks, strict=False)
    summary["verdict"] = verdict(summary, overfit is not None)
    artifacts = {"folder": str(out), "images": images}
    if options.json_output:
        import json
        import sys

        sys.stdout.write(
            json.dumps({"checks": checks, "summary": summary, "overfit": overfit, "artifacts": artifacts}, indent=2)
            + "\n"
        )
    else:
        render(checks, summary, overfit, artifacts, cfg, Console(highlight=False))
    return int(summary["exit_code"])


def render(
    checks: list[dict[str, Any]],
    summary: dict[str, Any],
    overfit: dict[str, Any] | None,
    artifacts: dict[str, Any],
    cfg: RunConfig,
    console: Any,
) -> None:
    """env-check's table, then the overfit numbers and where the drawn samples are."""
    from detrdoctor.verdict import render_table

    source = f"{cfg.model.backbone} DETR, {cfg.data.coco_path or 'synthetic data'}"
    render_table(checks, summary, source, console, title="detrdoctor triage")
    if overfit is not None:
        terms = ", ".join(
            f"{name} {a:.3f} → {b:.3f}" for name, (a, b) in overfit["terms"].items() if a is not None and b is not None
        )
        ap50 = "not scored" if overfit["ap50"] is None else f"{overfit['ap50']:.3f}"
        console.print(
            f"overfit: {overfit['images']} images, {overfit['steps']} steps, AP50 {ap50}; {terms}",
            soft_wrap=True,
            markup=False,
        )
    console.print(
        f"look: {len(artifacts['images'])} images drawn in {artifacts['folder']}/", soft_wrap=True, markup=False
    )
