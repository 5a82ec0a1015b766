"""The gradient watchdog's early warnings: lead before the first non-finite loss on divergent runs, and the false
alarms on healthy ones. Prints the table of NOTES-issue-21.md.

Divergent runs: the `tiny` profile with clipping off and the backbone's learning rate far too high (`--lr-backbone`;
the transformer's AdamW lr alone does not diverge on `tiny`, not even at 1.0), under `--on-anomaly warn` so that
nothing changes the course of the run. Per run: the first `warning` event, the first non-finite loss, the lead.
Healthy runs: a profile as shipped (`tiny`, `demo`, or `r50`: detr-r50 from scratch on small synthetic images on
the CPU); every warning or error event is a false alarm.

    python benchmarks/divergence_leads.py                                   # divergent tiny runs + healthy tiny
    python benchmarks/divergence_leads.py --lrs '' --healthy demo:400 --healthy r50:300
"""

from __future__ import annotations

import argparse
import tempfile
import time

from detrdoctor.profiles import load_profile

from detr.config import RunConfig
from detr.engine.callbacks import Callback
from detr.engine.trainer import Trainer
from detrdoctor.watchdog import GradientWatchdog


class Alarms(Callback):
    """The run's warning and error events, as (step, kind)."""

    def __init__(self):
        self.found: list[tuple[int, str]] = []

    def on_event(self, trainer, event) -> None:
        if event["severity"] in ("warning", "error"):
            self.found.append((event["step"], event["kind"]))


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


def run(cfg: RunConfig, steps: int) -> tuple[Alarms, GradientWatchdog, float]:
    cfg.train.max_steps, cfg.train.epochs, cfg.train.log_every = steps, 10_000, 10_000
    alarms, watchdog = Alarms(), GradientWatchdog(cfg.watchdog)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        Trainer(cfg, callbacks=[watchdog, alarms], output_dir=out).fit()
    return alarms, watchdog, time.perf_counter() - start


def divergent(lr_backbone: float, seed: int, steps: int) -> None:
    cfg = load_profile("tiny")
    cfg.train.lr_backbone, cfg.train.seed, cfg.train.clip_max_norm = lr_backbone, seed, 0.0
    cfg.watchdog.on_anomaly = "warn"
    alarms, watchdog, _ = run(cfg, steps)
    warnings = [(s, k) for s, k in alarms.found if k != "step_skipped"]
    first_warning = next((s for s, k in warnings if k not in ("nonfinite_loss", "nonfinite_grad")), None)
    kind = next((k for s, k in warnings if s == first_warning), "")
    nonfinite = watchdog.first_nonfinite_step
    lead = nonfinite - first_warning if nonfinite is not None and first_warning is not None else None
    needed = nonfinite is not None and nonfinite >= 10
    verdict = ("ok" if lead is not None and lead >= 5 else "MISSED") if needed else "n/a (non-finite before step 10)" \
        if nonfinite is not None else "n/a (finite)"
    print(f"| {lr_backbone:g} | {seed} | {first_warning or '—'} {kind} | {nonfinite or '—'} | "
          f"{'—' if lead is None else lead} | {verdict} |", flush=True)


def healthy(profile: str, seed: int, steps: int) -> None:
    cfg = r50_profile() if profile == "r50" else load_profile(profile)
    cfg.train.seed = seed
    alarms, watchdog, seconds = run(cfg, steps)
    found = ", ".join(f"{k}@{s}" for s, k in alarms.found) or "none"
    print(f"| {profile} | {seed} | {steps} | {watchdog.steps_skipped} | {found} | {seconds:.0f} s |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", default="0.02,0.022,0.025,0.027,0.03", help="backbone learning rates (comma list)")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of every run (comma list)")
    parser.add_argument("--steps", type=int, default=40, help="steps of each divergent run")
    parser.add_argument("--healthy", action="append", default=None,
                        help="PROFILE:STEPS of a healthy run (tiny, demo or r50), repeatable (default tiny:80)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    lrs = [float(lr) for lr in args.lrs.split(",") if lr]
    if lrs:
        print("| lr_backbone | seed | first warning | first non-finite | lead | |\n|---|---|---|---|---|---|")
        for lr in lrs:
            for seed in seeds:
                divergent(lr, seed, args.steps)
    print("\n| healthy profile | seed | steps | steps skipped | warning/error events | time |\n|---|---|---|---|---|---|")
    for item in args.healthy or ["tiny:80"]:
        profile, steps = item.split(":")
        for seed in seeds:
            healthy(profile, seed, int(steps))


if __name__ == "__main__":
    main()
