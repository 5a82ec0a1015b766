"""The demo's final AP50 over seeds and thread counts: README's first command, run as the user runs it.

Each run is `detrdoctor train --profile PROFILE --seed S --no-dashboard` in a fresh process with
OMP_NUM_THREADS=T (torch's intra-op threads; its default is one per core), in OUT/seedS-threadsT. The
table gives each run's last evaluation (the EMA weights' AP50 and AP), its steps and its training time
(the `done` line's seconds: wall time of the training loop, including the evaluations, without the
dataset generation). A run is deterministic for one machine, seed and thread count, so a folder that
already ends with a `done` line is read back, not rerun. `--parallel 2` runs two at a time: fine for
the AP of one-thread runs, but then the times are not those of a run alone. The synthetic dataset is
generated into DETRDOCTOR_CACHE by the first run: start with `--parallel 1`, or generate it first.

    python benchmarks/demo_seeds.py                                  # seeds 0 1 2 × threads 1 2, one at a time
    python benchmarks/demo_seeds.py --threads 1 --parallel 2 --out runs/demo-seeds
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict

CLI = "from detrdoctor.cli import app; app()"
DONE = re.compile(r"^done (\d+) steps in (\d+) s")


class RunResult(TypedDict):
    seed: int
    threads: int
    steps: int
    train_s: int
    AP50: float
    AP: float


def run_folder(out: Path, seed: int, threads: int) -> Path:
    return out / f"seed{seed}-threads{threads}"


def read_result(folder: Path, seed: int, threads: int) -> RunResult | None:
    """The finished run in `folder` (its `done` line and last eval record), None if it did not finish."""
    log = folder / "train.log"
    done = [m for line in log.read_text().splitlines() if (m := DONE.match(line))] if log.exists() else []
    if not done:
        return None
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    if not evals:
        raise SystemExit(f"{folder}: the run never evaluated (the profile's eval_every is 0)")
    last_eval = evals[-1]
    steps, train_s = (int(g) for g in done[-1].groups())
    return {
        "seed": seed,
        "threads": threads,
        "steps": steps,
        "train_s": train_s,
        "AP50": last_eval["AP50"],
        "AP": last_eval["AP"],
    }


def train(profile: str, out: Path, seed: int, threads: int) -> RunResult:
    folder = run_folder(out, seed, threads)
    found = read_result(folder, seed, threads)
    if found is not None:
        return found
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", CLI, "train", "--profile", profile, "--seed", str(seed), "--no-dashboard"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(folder / "train.log", "w") as log:
        subprocess.run(
            [*command, "--output-dir", str(folder)], env=env, stdout=log, stderr=subprocess.STDOUT, check=True
        )
    result = read_result(folder, seed, threads)
    if result is None:
        raise RuntimeError(f"{folder}: the run ended without its `done` line (see train.log)")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo", help="profile name or TOML path")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", default="runs/demo-seeds", help="folder of the run folders")
    args = parser.parse_args()

    out = Path(args.out)
    jobs = list(itertools.product(args.seeds, args.threads))
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        results = list(pool.map(lambda job: train(args.profile, out, *job), jobs))
    print(f"{'seed':>4} {'threads':>7} {'steps':>6} {'train s':>7} {'AP50':>6} {'AP':>6}")
    for r in results:
        print(f"{r['seed']:>4} {r['threads']:>7} {r['steps']:>6} {r['train_s']:>7} {r['AP50']:>6.3f} {r['AP']:>6.3f}")
    worst = min(results, key=lambda r: r["AP50"])
    print(f"minimum AP50 {worst['AP50']:.3f} (seed {worst['seed']}, {worst['threads']} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
