"""Overhead of the gradient watchdog: training-step time with it on vs off, interleaved in one process.

Two trainers on the same profile (one with the watchdog, one without) take turns, a block of steps each
(one step by default), on the same pre-loaded batches, so data loading and the machine's load hit both
alike. Reported: the step time of each, the overhead from the paired blocks (the median is robust to
bursts of load from other processes), and the time spent inside the watchdog's own hooks per step.
The watchdog's low-frequency samples (every `sample_every` steps) fall at their natural rate.

    python benchmarks/bench_watchdog_overhead.py --profile demo --blocks 100
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from detr.engine.callbacks import Callback, StepContext
from detr.engine.trainer import Trainer, move_targets
from detrdoctor.profiles import load_profile
from detrdoctor.watchdog import GradientWatchdog


class HookClock:
    """Wraps a callback's step hooks and adds up the wall time spent in them (forward hooks not included)."""

    HOOKS = ("on_step_start", "after_backward", "on_step_end")

    def __init__(self, callback: Callback):
        self.seconds = 0.0
        for name in self.HOOKS:
            setattr(callback, name, self._timed(getattr(callback, name)))

    def _timed(self, hook):
        @functools.wraps(hook)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def run_step(trainer: Trainer, batch, epoch: int) -> float:
    """One step as the trainer's loop runs it (hooks, train_step, hooks); returns its wall time."""
    images, mask, targets = batch
    trainer.global_step += 1
    ctx = StepContext(
        step=trainer.global_step,
        epoch=epoch,
        batch_in_epoch=trainer.global_step - 1,
        images=images,
        mask=mask,
        targets=targets,
    )
    start = time.perf_counter()
    for cb in trainer.callbacks:
        cb.on_step_start(trainer, ctx)
    trainer.train_step(ctx)
    for cb in trainer.callbacks:
        cb.on_step_end(trainer, ctx, None)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--device", default=None, help="override the profile's device (cpu, cuda)")
    parser.add_argument("--blocks", type=int, default=100, help="blocks per trainer (they alternate)")
    parser.add_argument("--block-steps", type=int, default=1, help="steps per block")
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, loaded once and cycled")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps per trainer first")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    cfg = load_profile(args.profile)
    if args.device:
        cfg.train.device = args.device
    cfg.train.eval_every = 0
    root = Path(tempfile.mkdtemp(prefix="bench-watchdog-"))
    (root / "off").mkdir()
    (root / "on").mkdir()
    off = Trainer(cfg, output_dir=root / "off")
    watchdog = GradientWatchdog(cfg.watchdog)
    on = Trainer(cfg, callbacks=[watchdog], output_dir=root / "on")
    clock = HookClock(watchdog)
    watchdog.on_train_start(on)

    off.train_loader.batch_sampler.set_epoch(0)
    batches = [
        (images.to(off.device), mask.to(off.device), move_targets(targets, off.device))
        for images, mask, targets in itertools.islice(off.train_loader, args.batches)
    ]

    for trainer in (off, on):
        for i in range(args.warmup_steps):
            run_step(trainer, batches[i % len(batches)], 0)
    warm_hook_seconds = clock.seconds
    times: dict[str, list[float]] = {"off": [], "on": []}
    pairs = []
    for block in range(args.blocks):
        order = ("off", "on") if block % 2 == 0 else ("on", "off")  # ABBA: neither always goes first
        means = {}
        for name in order:
            trainer = on if name == "on" else off
            block_times = [run_step(trainer, batches[i % len(batches)], 0) for i in range(args.block_steps)]
            times[name] += block_times
            means[name] = statistics.fmean(block_times)
        pairs.append(means["on"] / means["off"] - 1)
        if (block + 1) % max(1, args.blocks // 10) == 0:
            print(
                f"block {block + 1}/{args.blocks}: off {means['off'] * 1e3:.1f} ms/step, on {means['on'] * 1e3:.1f} "
                f"ms/step ({pairs[-1]:+.2%})",
                flush=True,
            )

    step_off = statistics.fmean(times["off"])
    hook_per_step = (clock.seconds - warm_hook_seconds) / len(times["on"])
    result = {
        "profile": args.profile,
        "device": str(on.device),
        "threads": torch.get_num_threads(),
        "steps_per_trainer": len(times["on"]),
        "sample_every": cfg.watchdog.sample_every,
        "step_ms_off": step_off * 1e3,
        "step_ms_on": statistics.fmean(times["on"]) * 1e3,
        "median_step_ms_off": statistics.median(times["off"]) * 1e3,
        "median_step_ms_on": statistics.median(times["on"]) * 1e3,
        "overhead_mean_of_pairs": statistics.fmean(pairs),
        "overhead_median_of_pairs": statistics.median(pairs),
        "overhead_pairs_stderr": statistics.stdev(pairs) / len(pairs) ** 0.5 if len(pairs) > 1 else None,
        "watchdog_hook_ms_per_step": hook_per_step * 1e3,
        "watchdog_hook_fraction_of_step": hook_per_step / step_off,
        "events": watchdog.summary()["events"],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.profile} on {result['device']} ({result['threads']} threads), {result['steps_per_trainer']} "
            f"steps each: off {result['step_ms_off']:.1f} ms/step, on {result['step_ms_on']:.1f} ms/step"
        )
        print(
            f"overhead from paired blocks: mean {result['overhead_mean_of_pairs']:+.2%} "
            f"± {result['overhead_pairs_stderr'] or 0:.2%} (s.e.), median {result['overhead_median_of_pairs']:+.2%}"
        )
        print(
            f"inside the watchdog's hooks: {result['watchdog_hook_ms_per_step']:.2f} ms/step = "
            f"{result['watchdog_hook_fraction_of_step']:.2%} of a step; events {result['events']}"
        )


if __name__ == "__main__":
    main()
