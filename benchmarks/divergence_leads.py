"""The gradient watchdog's early warnings: lead before the first non-finite value on divergent runs, and the false
alarms on healthy ones. Prints the table of NOTES-issue-21.md.

Divergent runs: the `tiny` profile with clipping off and the backbone's learning rate far too high (`--lr-backbone`;
the transformer's AdamW lr alone does not diverge on `tiny`, not even at 1.0), under `--on-anomaly warn` so that
nothing changes the course of the run, on each `--attention` path (`fused`, the default, and `reference`). Per run:
the first `warning` event, the first non-finite value (the first `nonfinite_loss` or `nonfinite_grad` event: the
fused attention's backward overflows while the loss is still finite), the lead.
Healthy runs: a profile as shipped (`tiny`, `demo`, or `r50`: detr-r50 from scratch on small synthetic images on
the CPU); every warning or error event is a false alarm.

    python benchmarks/divergence_leads.py                                   # divergent tiny runs + healthy tiny
    python benchmarks/divergence_leads.py --lrs '' --healthy demo:400 --healthy r50:300
    python benchmarks/divergence_leads.py --lrs '' --healthy '' --recover 160     # skip / rollback on divergent runs
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile

from detr.config import RunConfig
from detr.engine.callbacks import Callback
from detr.engine.trainer import Trainer
from detrdoctor.profiles import load_profile
from detrdoctor.watchdog import GradientWatchdog


class Alarms(Callback):
    """The run's warning and error events, as (step, kind), its warnings alone, its rollbacks and every step's loss."""

    def __init__(self, watchdog: GradientWatchdog):
        self.watchdog = watchdog
        self.found: list[tuple[int, str]] = []
        self.warnings: list[tuple[int, str]] = []
        self.rollbacks: list[tuple[int, int]] = []
        self.losses: list[float] = []

    def on_event(self, trainer, event) -> None:
        if event["severity"] in ("warning", "error"):
            self.found.append((event["step"], event["kind"]))
        if event["severity"] == "warning" and event["kind"] != "step_skipped":
            self.warnings.append((event["step"], event["kind"]))
        if event["kind"] == "rollback":
            self.rollbacks.append((event["step"], event["restored_step"]))

    def on_step_end(self, trainer, ctx, record) -> None:
        assert self.watchdog.latest is not None
        self.losses.append(self.watchdog.latest.loss)  # the watchdog's reading of this step


def r50_profile() -> RunConfig:
    """detr-r50's model and schedule without pretrained weights, on 128-px synthetic images, on the CPU."""
    cfg = load_profile("detr-r50")
    cfg.model.backbone_weights = "none"
    d = cfg.data
    d.train_scales, d.max_size, d.val_size, d.crop_resize_scales = [96, 112, 128], 160, 128, [96, 128]
    d.crop_min_size, d.crop_max_size, d.num_workers, d.pin_memory = 64, 96, 0, False
    d.synthetic_train_images, d.synthetic_val_images, d.synthetic_image_size = 400, 8, 128
    cfg.train.device, cfg.train.eval_every = "cpu", 0
    return cfg


def run(cfg: RunConfig, steps: int) -> tuple[Alarms, GradientWatchdog, dict]:
    cfg.train.max_steps, cfg.train.epochs, cfg.train.log_every = steps, 10_000, 10_000
    watchdog = GradientWatchdog(cfg.watchdog)
    alarms = Alarms(watchdog)
    with tempfile.TemporaryDirectory() as out:
        summary = Trainer(cfg, callbacks=[watchdog, alarms], output_dir=out).fit()
    return alarms, watchdog, summary


NONFINITE = ("nonfinite_loss", "nonfinite_grad")


def divergent(lr_backbone: float, seed: int, steps: int, attention: str) -> None:
    """A run's first non-finite value is its first nonfinite_loss or nonfinite_grad event (the fused attention's
    backward can overflow while the loss is still finite)."""
    cfg = load_profile("tiny")
    cfg.train.lr_backbone, cfg.train.seed, cfg.train.clip_max_norm = lr_backbone, seed, 0.0
    cfg.model.attention, cfg.watchdog.on_anomaly = attention, "warn"
    alarms, watchdog, _ = run(cfg, steps)
    first_warning, kind = alarms.warnings[0] if alarms.warnings else (None, "")
    nonfinite, what = next(((s, k) for s, k in alarms.found if k in NONFINITE), (None, ""))
    lead = nonfinite - first_warning if nonfinite is not None and first_warning is not None else None
    needed = nonfinite is not None and nonfinite >= 10
    verdict = (
        ("ok" if lead is not None and lead >= 5 else "MISSED")
        if needed
        else "n/a (non-finite before step 10)"
        if nonfinite is not None
        else "n/a (finite)"
    )
    print(
        f"| {attention} | {lr_backbone:g} | {seed} | {first_warning or '—'} {kind} | {nonfinite or '—'} {what} | "
        f"{'—' if lead is None else lead} | {verdict} |",
        flush=True,
    )


def healthy(profile: str, seed: int, steps: int) -> None:
    cfg = r50_profile() if profile == "r50" else load_profile(profile)
    cfg.train.seed = seed
    alarms, watchdog, summary = run(cfg, steps)
    found = ", ".join(f"{k}@{s}" for s, k in alarms.found) or "none"
    print(
        f"| {profile} | {seed} | {steps} | {watchdog.policy.steps_skipped} | {found} | {summary['elapsed_s']:.0f} s |",
        flush=True,
    )


def recover(mode: str, lr_backbone: float, seed: int, steps: int, snapshot_every: int) -> None:
    """A divergent run under `skip` or `rollback`: where it rolled back to, how it ended, its loss by blocks."""
    cfg = load_profile("tiny")
    cfg.train.lr_backbone, cfg.train.seed, cfg.train.clip_max_norm = lr_backbone, seed, 0.0
    cfg.watchdog.on_anomaly, cfg.watchdog.snapshot_every = mode, snapshot_every
    alarms, watchdog, summary = run(cfg, steps)
    rollbacks = ", ".join(f"{s}→{r}" for s, r in alarms.rollbacks) or "none"
    after = alarms.rollbacks[-1][0] if alarms.rollbacks else 0
    late_nonfinite = sum(not math.isfinite(v) for v in alarms.losses[after:])
    block = 20
    means = " ".join(
        f"{statistics.fmean(finite):.1f}"
        if (finite := [v for v in alarms.losses[i : i + block] if math.isfinite(v)])
        else "nan"
        for i in range(0, len(alarms.losses), block)
    )
    print(
        f"| {mode} | {lr_backbone:g} | {seed} | {snapshot_every} | {rollbacks} | {summary['exit_code']} | "
        f"{summary['steps']} | {watchdog.policy.steps_skipped} | {late_nonfinite} | {means} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--lrs", default="0.003,0.005,0.008,0.01,0.015,0.02,0.025", help="backbone learning rates (comma list)"
    )
    parser.add_argument("--attention", default="fused,reference", help="[model] attention kinds (comma list)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of every run (comma list)")
    parser.add_argument("--steps", type=int, default=40, help="steps of each divergent run")
    parser.add_argument(
        "--healthy",
        action="append",
        default=None,
        help="PROFILE:STEPS of a healthy run (tiny, demo or r50), repeatable (default tiny:80)",
    )
    parser.add_argument("--recover", type=int, default=0, help="steps of the skip/rollback runs (0: none)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    lrs = [float(lr) for lr in args.lrs.split(",") if lr]
    if lrs:
        print("| attention | lr_backbone | seed | first warning | first non-finite | lead | |\n" + "|---" * 7 + "|")
        for attention in args.attention.split(","):
            for lr in lrs:
                for seed in seeds:
                    divergent(lr, seed, args.steps, attention)
    healthy_runs = [item for item in args.healthy or ["tiny:80"] if item]
    if healthy_runs:
        print(
            "\n| healthy profile | seed | steps | steps skipped | warning/error events | time |\n"
            "|---|---|---|---|---|---|"
        )
    for item in healthy_runs:
        profile, steps = item.split(":")
        for seed in seeds:
            healthy(profile, seed, int(steps))
    if args.recover:
        print(
            "\n| mode | lr_backbone | seed | snapshot_every | rollbacks (step→restored) | exit | steps | dropped | "
            "non-finite after the last rollback | mean loss per 20 steps |\n" + "|---" * 10 + "|"
        )
        for mode, lr, seed, snapshot_every in (
            ("rollback", 0.005, 1, 5),
            ("rollback", 0.005, 1, 50),
            ("skip", 0.05, 0, 50),
            ("skip", 0.2, 0, 50),
        ):
            recover(mode, lr, seed, args.recover, snapshot_every)


if __name__ == "__main__":
    main()
