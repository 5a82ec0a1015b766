"""Hungarian matcher: ours (per-image cost blocks, batched) against the official whole-batch algorithm.

    python benchmarks/bench_matcher.py [--batch-sizes 2 4 16 64] [--repeats 15] [--threads N]

CPU, 100 queries, 91 classes, 1–30 targets per image. Prints the median time of each, the speed-up, and
whether the assignments are identical; exits 1 if they differ or a speed-up target is missed.
On a machine busy with other jobs, run it with OMP_WAIT_POLICY=passive (or --threads 1): OpenMP threads
spinning on a descheduled peer stall every parallel op, which distorts both timings, the shorter most.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from official_reference import official_match

from detr.matcher import HungarianMatcher

COSTS = {"cost_class": 1.0, "cost_bbox": 5.0, "cost_giou": 2.0}
TARGET_SPEEDUPS = {16: 5.0, 64: 30.0}


def random_batch(batch_size: int, num_queries: int, num_classes: int, max_targets: int, generator: torch.Generator):
    def boxes(n: int) -> torch.Tensor:
        centers = torch.rand(n, 2, generator=generator)
        sizes = 0.02 + 0.5 * torch.rand(n, 2, generator=generator)
        return torch.cat([centers, sizes], dim=1)

    outputs = {
        "pred_logits": torch.randn(batch_size, num_queries, num_classes + 1, generator=generator),
        "pred_boxes": boxes(batch_size * num_queries).view(batch_size, num_queries, 4),
    }
    sizes = torch.randint(1, max_targets + 1, (batch_size,), generator=generator).tolist()
    targets = [{"labels": torch.randint(0, num_classes, (n,), generator=generator), "boxes": boxes(n)} for n in sizes]
    return outputs, targets


def median_seconds(functions: list, repeats: int) -> list[float]:
    """The median run time of each function; runs alternate so that a busy machine slows all of them alike."""
    for fn in functions:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for fn, fn_times in zip(functions, times):
            start = time.perf_counter()
            fn()
            fn_times.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--classes", type=int, default=91)
    parser.add_argument("--max-targets", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(args.seed)
    matcher = HungarianMatcher(**COSTS)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.queries} queries, "
        f"{args.classes} classes, 1-{args.max_targets} targets per image, median of {args.repeats}"
    )
    print(f"{'batch':>5} {'targets':>7} {'official ms':>12} {'ours ms':>9} {'speed-up':>9}  assignments  target")
    ok = True
    for batch_size in args.batch_sizes:
        outputs, targets = random_batch(batch_size, args.queries, args.classes, args.max_targets, generator)
        official = official_match(outputs, targets, **COSTS)
        ours = matcher(outputs, targets)
        identical = all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(ours, official))
        official_s, ours_s = median_seconds(
            [lambda o=outputs, t=targets: official_match(o, t, **COSTS), lambda o=outputs, t=targets: matcher(o, t)],
            args.repeats,
        )
        speedup = official_s / ours_s
        wanted = TARGET_SPEEDUPS.get(batch_size)
        verdict = "-" if wanted is None else f"≥{wanted:.0f}× {'met' if speedup >= wanted else 'MISSED'}"
        ok &= identical and (wanted is None or speedup >= wanted)
        print(
            f"{batch_size:>5} {sum(len(t['boxes']) for t in targets):>7} {official_s * 1e3:>12.2f} "
            f"{ours_s * 1e3:>9.2f} {speedup:>8.1f}×  {'identical' if identical else 'DIFFERENT':<11}  {verdict}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
