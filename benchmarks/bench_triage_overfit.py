"""How many steps the triage overfit test needs, and what they cost: AP50 on the K images along the way.

    python benchmarks/bench_triage_overfit.py [--profile demo] [--images 4] [--steps 300] [--every 25] [--lr LR]

Runs the triage's overfit configuration (detrdoctor.triage.overfit) with an extra evaluation every `--every`
steps, and prints one line per evaluation: step, AP50, loss and the seconds of training so far (evaluations
excluded). Pick `triage --steps` as the first step count whose AP50 stays ≥ 0.9, plus a margin.

Measured on the shared 2-core machine (load average ~8-12, so the seconds say little): the demo profile on
4 images reached AP50 0.101 / 0.867 / 1.000 at steps 25 / 50 / 75, hence the default of 200 steps; the
tests' tiny model (tests/e2e/test_triage.py) 0.5 at steps 40-60 and 1.0 from step 70 on, at lr 5e-4.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from detr.engine.callbacks import Callback
from detr.engine.trainer import Trainer
from detrdoctor.runconfig import load_run_config
from detrdoctor.triage.overfit import overfit_config, write_subset


class EvalEvery(Callback):
    def __init__(self, every: int) -> None:
        self.every, self.train_s, self.started = every, 0.0, 0.0

    def on_step_start(self, trainer, ctx) -> None:
        self.started = time.perf_counter()

    def on_step_end(self, trainer, ctx, record) -> None:
        self.train_s += time.perf_counter() - self.started
        if ctx.step % self.every == 0:
            ap50 = trainer.evaluate()["AP50"]
            print(
                f"step {ctx.step:4d}  AP50 {ap50:.3f}  loss {record['loss']:.3f}  train {self.train_s:6.1f} s",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    cfg = load_run_config(args.profile, None, {"train": {"lr": args.lr, "device": args.device}})
    with tempfile.TemporaryDirectory() as tmp:
        subset, ids = write_subset(cfg, args.images, Path(tmp))
        test = overfit_config(cfg, subset, len(ids), args.steps, Path(tmp))
        print(
            f"{args.profile}: {len(ids)} images, batch {test.train.batch_size}, lr {test.train.lr:g}, "
            f"{torch.get_num_threads()} threads",
            flush=True,
        )
        Trainer(test, callbacks=[EvalEvery(args.every)]).fit()


if __name__ == "__main__":
    main()
