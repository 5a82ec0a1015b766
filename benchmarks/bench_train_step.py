"""Training-step time: our trainer against a plain re-implementation of the official loop, side by side.

Both start from the same weights (same seed) and take turns, one step each, on the same pre-loaded
batches, so the machine's load hits both alike. Ours is `Trainer.train_step` plus its step record
(written every `log_every` steps; the tiny profile logs every step). The official loop is
`benchmarks/official_reference.py`: a matcher call and host transfer per decoder layer, every loss read
to the host, `clip_grad_norm_`, and AdamW with torch's default implementation. The first step's losses
are compared, so the two are known to compute the same thing.

    python benchmarks/bench_train_step.py [--profile tiny] [--steps 60] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time

import torch
from official_reference import OfficialMatcher, official_train_step

from detr import build_model
from detr.engine.callbacks import StepContext
from detr.engine.optim import parameter_groups
from detr.engine.trainer import Trainer
from detrdoctor.profiles import load_profile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--steps", type=int, default=60, help="timed steps of each")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, loaded once and cycled")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_profile(args.profile)
    cfg.train.device, cfg.train.eval_every = "cpu", 0
    t = cfg.train
    ours = Trainer(cfg, output_dir=tempfile.mkdtemp(prefix="bench-train-step-"))
    torch.manual_seed(t.seed)  # the trainer's seed: the same initial weights
    model, criterion, _ = build_model(cfg.model, train_backbone=t.lr_backbone > 0)
    criterion.matcher = OfficialMatcher(cfg.model.set_cost_class, cfg.model.set_cost_bbox, cfg.model.set_cost_giou)
    optimizer = torch.optim.AdamW(parameter_groups(model, t), lr=t.lr, weight_decay=t.weight_decay)
    model.train()

    ours.train_loader.batch_sampler.set_epoch(0)
    batches = list(itertools.islice(ours.train_loader, args.batches))

    def our_step(i: int) -> float:
        images, mask, targets = batches[i % len(batches)]
        ours.global_step += 1
        ctx = StepContext(step=ours.global_step, epoch=0, batch_in_epoch=i, images=images, mask=mask, targets=targets)
        ours.train_step(ctx)
        ctx.timings.update(data=0.0, step=1.0)
        if ours.global_step % t.log_every == 0:
            ours.step_record(ctx)
        return float(ctx.loss.detach())

    def official_step(i: int) -> float:
        images, mask, targets = batches[i % len(batches)]
        return official_train_step(model, criterion, optimizer, images, mask, targets, t.clip_max_norm)

    first = our_step(0), official_step(0)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, profile {args.profile}, "
        f"batch {t.batch_size}; first-step loss ours {first[0]:.6f} official {first[1]:.6f}"
    )
    for i in range(1, args.warmup_steps):
        our_step(i), official_step(i)
    times: dict[str, list[float]] = {"ours": [], "official": []}
    for i in range(args.steps):
        order = (("ours", our_step), ("official", official_step))
        for name, step in order if i % 2 == 0 else order[::-1]:  # neither always goes first
            start = time.perf_counter()
            step(args.warmup_steps + i)
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    ratio = median["ours"] / median["official"]
    print(
        f"median step: ours {median['ours'] * 1e3:.1f} ms, official loop {median['official'] * 1e3:.1f} ms "
        f"→ ours takes {ratio:.2f}× the official time ({args.steps} steps each, interleaved)"
    )
    same_start = abs(first[0] - first[1]) <= 1e-4 * abs(first[1])
    if not same_start:
        print("first-step losses differ: the two loops do not compute the same thing")
    return 0 if same_start and ratio <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
