"""What loader-bench's per-stage timing costs: the same settings with timing on and off, interleaved.

Two views, printed side by side:
  1. throughput: measure_setting with stage timing on and off, alternating which goes first each round,
     median images/s of each (what a user sees; noisy on a busy machine);
  2. per sample: the plain dataset + collate and the timed wrappers on the same indices, alternating per
     batch in this process (paired differences: far less noisy);
  3. the instrumentation alone, on a dataset that does nothing (its cost in µs, best of several runs).

    python benchmarks/bench_loaderbench_overhead.py [--profile demo] [--workers 2] [--rounds 6] [--batches 30]
"""

from __future__ import annotations

import argparse
import statistics
import time


def throughput(dataset, cfg, workers: int, rounds: int, batches: int) -> dict[bool, list[float]]:
    from detrdoctor.loaderbench.measure import BenchOptions, run_sweep

    rates: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for timed in (True, False) if r % 2 == 0 else (False, True):
            opts = BenchOptions(
                batch_size=cfg.train.batch_size,
                batches=batches,
                train=True,
                seed=cfg.train.seed,
                stage_timing=timed,
                budget_s=None,
            )
            (result,) = run_sweep(dataset, cfg.data, opts, [(workers, False)])
            rates[timed].append(result.images_per_s)
    return rates


def per_sample(dataset, samples: int, batch_size: int) -> tuple[float, float]:
    """(plain ms/sample, median paired extra ms/sample of timed dataset + collate), alternating per batch."""
    from detr.data import collate_batch
    from detrdoctor.loaderbench.stages import StageTimedDataset, TimedCollate, decoder_probe

    timed_dataset, timed_collate = StageTimedDataset(dataset), TimedCollate(collate_batch)
    plain_times, extra = [], []
    with decoder_probe():
        for start in range(0, samples, batch_size):
            indices = range(start, start + batch_size)
            t0 = time.perf_counter()
            collate_batch([dataset[i] for i in indices])
            t1 = time.perf_counter()
            timed_collate([timed_dataset[i] for i in indices])
            t2 = time.perf_counter()
            plain_times.append((t1 - t0) / batch_size)
            extra.append((t2 - t1 - (t1 - t0)) / batch_size)
    return 1000 * statistics.median(plain_times), 1000 * statistics.median(extra)


class _NoopDataset:
    """Calls a transform and a decoder that do nothing: what is left is the instrumentation itself."""

    def __init__(self, decode) -> None:
        self.decode = decode
        self.transform = lambda sample: sample

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        return self.transform(self.decode(index)), {}


def instrumentation_us(repeats: int = 7, calls: int = 20_000) -> float:
    """Microseconds the probes, the wrapper and the collate wrapper add per sample (best of `repeats`)."""
    from detrdoctor.loaderbench.stages import StageTimedDataset, TimedCollate, TimedDecoder

    plain, timed = _NoopDataset(lambda i: i), StageTimedDataset(_NoopDataset(TimedDecoder(lambda i: i)))
    plain_collate, timed_collate = (lambda samples: ()), TimedCollate(lambda samples: ())
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(calls):
            plain_collate([plain[i]])
        t1 = time.perf_counter()
        for i in range(calls):
            timed_collate([timed[i]])
        t2 = time.perf_counter()
        best = min(best, ((t2 - t1) - (t1 - t0)) / calls)
    return 1e6 * best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--samples", type=int, default=800)
    args = parser.parse_args()

    import os

    import torch

    from detr.data import build_dataset
    from detrdoctor.profiles import load_profile

    cfg = load_profile(args.profile)
    dataset = build_dataset(cfg.data, "train", train=True, seed=cfg.train.seed)
    dataset.set_epoch(0)
    print(
        f"profile {args.profile}, batch {cfg.train.batch_size}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}"
    )

    rates = throughput(dataset, cfg, args.workers, args.rounds, args.batches)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"throughput, {args.workers} workers, {args.rounds} interleaved rounds of {args.batches} batches:")
    print(f"  timing off: median {off:.1f} images/s  {[round(r, 1) for r in rates[False]]}")
    print(f"  timing on:  median {on:.1f} images/s  {[round(r, 1) for r in rates[True]]}")
    print(
        f"  cost: {100 * (off - on) / off:+.2f}% of throughput (run-to-run noise: "
        f"±{100 * statistics.pstdev(rates[False]) / off:.1f}% for timing off)"
    )

    torch.set_num_threads(1)  # as in a DataLoader worker
    plain, extra = per_sample(dataset, args.samples, cfg.train.batch_size)
    print(f"per sample, in-process, {args.samples} samples, timed and plain alternating per batch:")
    print(
        f"  plain {plain:.3f} ms per image (median); timed adds {1000 * extra:+.1f} µs (median of paired "
        f"differences) = {100 * extra / plain:+.2f}%"
    )
    cost = instrumentation_us()
    print(
        f"instrumentation alone (no-op dataset, best of 7): {cost:.2f} µs per image = "
        f"{100 * cost / (1000 * plain):.3f}% of the {plain:.3f} ms an image costs to load"
    )


if __name__ == "__main__":
    main()
