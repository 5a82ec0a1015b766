"""Losses and gradient norms of the tiny profile, seed 0: a refactor that must not change numerics compares them.

    python benchmarks/tiny_fingerprint.py OUT.json            # write this tree's numbers
    python benchmarks/tiny_fingerprint.py OUT.json --compare BASE.json   # and say whether they are bit-identical

Run both sides on the same machine with the same thread count (OMP_NUM_THREADS=1 is the most reproducible).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from detr.engine.metrics import read_metrics
from detr.engine.trainer import Trainer
from detrdoctor.profiles import load_profile


def fingerprint() -> list[list[float]]:
    cfg = load_profile("tiny")
    cfg.train.seed = 0
    cfg.model.dropout = 0.1  # draws from the RNG every step: a change in the order of random draws shows too
    with tempfile.TemporaryDirectory() as folder:
        Trainer(cfg, output_dir=Path(folder) / "run").fit()
        records = read_metrics(Path(folder) / "run" / "metrics.jsonl")
    return [[r["step"], r["loss"], r["grad_norm"]] for r in records if r["type"] == "step"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args()
    steps = fingerprint()
    args.out.write_text(json.dumps(steps))
    print(f"{len(steps)} steps; last: {steps[-1]}")
    if args.compare:
        base = json.loads(args.compare.read_text())
        differing = [(a, b) for a, b in zip(base, steps, strict=False) if a != b]
        same = not differing and len(base) == len(steps)
        print("bit-identical" if same else f"DIFFERENT: {len(differing)} steps, first {differing[:1]}")


if __name__ == "__main__":
    main()
