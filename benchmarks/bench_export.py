"""DETR-R50 (random init, the paper's 91 classes and 100 queries) exported with `detrdoctor export` and checked on
the default synthetic inputs (800×1066, 800×1333 and 480×640, batch 1 and 2): the largest output differences,
the share of matching detections, and ms/image of PyTorch and onnxruntime at 800×1066 on this machine.

Random weights give near-uniform class scores, so nothing reaches the usual 0.5; the check is also run with
--threshold 0, where every query of every image must keep its label and box (the strictest form of the test).

    python benchmarks/bench_export.py [--runs 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def random_r50_checkpoint(path: Path) -> None:
    """An official-style checkpoint ({"model": state_dict}) of a freshly initialised DETR-R50."""
    from detr import build_model
    from detrdoctor.profiles import load_profile

    cfg = load_profile("detr-r50")
    cfg.model.num_classes = 91
    cfg.model.backbone_weights = "none"
    torch.manual_seed(0)
    model, _, _ = build_model(cfg.model)
    torch.save({"model": model.state_dict()}, path)


def export(weights: Path, out: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "detrdoctor.cli", "export", "--weights", str(weights), "--out", str(out)]
    result = subprocess.run([*command, *extra, "--json"], capture_output=True, text=True)
    if result.returncode not in (0, 1):
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per runtime (median)")
    parser.add_argument("--keep", help="folder for the checkpoint and the ONNX file (default: a temporary one)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="bench-export-"))
    folder.mkdir(parents=True, exist_ok=True)
    weights, out = folder / "detr-r50-random.pth", folder / "detr-r50.onnx"
    random_r50_checkpoint(weights)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; files in {folder}")
    first = export(weights, out, "--timing-runs", str(args.runs))
    strict = export(weights, out, "--verify", str(out), "--threshold", "0", "--timing-runs", "0")
    for label, record in (("threshold 0.5", first), ("threshold 0", strict)):
        check = record["check"]
        diff = check["max_abs_diff"]
        print(
            f"{label}: max |Δ| logits {diff['logits']:.2e} boxes {diff['boxes']:.2e}; "
            f"max rel logits {check['max_rel_diff']['logits']:.2e} boxes {check['max_rel_diff']['boxes']:.2e}; "
            f"matching {check['matching_detections']:.0%} of {check['inputs']['images']} images "
            f"({check['detections_compared']} detections); worst {check['worst']}; passed {check['passed']}"
        )
    timing = first["ms_per_image"]
    print(
        f"export {first['export_s']:.0f} s, {first['bytes'] / 2**20:.0f} MiB; ms/image at {timing['shape']} "
        f"(median of {timing['runs']}): torch {timing['torch']:.0f}, onnxruntime {timing['onnxruntime']:.0f}"
    )


if __name__ == "__main__":
    main()
