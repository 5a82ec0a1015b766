"""GPU check of `detrdoctor memprofile` (run on a machine with a CUDA GPU).

1. Times the default measured sweep of DETR-R50 (4 batch sizes × off/best AMP, worst-case shape): the
   target is under 90 s.
2. Runs the same sweep with --estimate and prints the estimate's error per point against the measured
   peak (target: within ±10%), reserved and device totals beside.
3. With --save, records the comparison as calibration data in detrdoctor/profiles/calibration/ (GPU, torch, date).

    python benchmarks/memprofile_gpu_check.py [--profile detr-r50] [--batch-sizes 1,2,4,8] [--save]
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

CALIBRATION_DIR = Path(__file__).resolve().parent.parent / "detrdoctor" / "profiles" / "calibration"
SWEEP_TARGET_S = 90
ERROR_TARGET = 0.10


def memprofile(*args: str) -> tuple[dict, float]:
    """Run the command, return its JSON and wall time (progress and warnings pass through to stderr)."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "detrdoctor.cli", "memprofile", *args, "--json"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout), time.perf_counter() - started


def gib(n: int | None) -> str:
    return "    –    " if n is None else f"{n / 2**30:8.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="detr-r50")
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument(
        "--save", action="store_true", help="write the calibration record to detrdoctor/profiles/calibration/"
    )
    args = parser.parse_args()
    common = ["--profile", args.profile, "--batch-sizes", args.batch_sizes]

    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: this check measures on a GPU", file=sys.stderr)
        return 2

    timed, sweep_s = memprofile(*common)
    ok_points = sum(r["status"] == "ok" for r in timed["results"])
    verdict = "PASS" if sweep_s < SWEEP_TARGET_S else "FAIL"
    print(
        f"measured sweep: {sweep_s:.1f} s for {len(timed['results'])} points ({ok_points} ok) "
        f"on {timed['device']['name']} — target < {SWEEP_TARGET_S} s: {verdict}"
    )

    doc, both_s = memprofile(*common, "--estimate")
    estimated = {(r["batch_size"], r["amp"]): r for r in doc["results"] if r["mode"] == "estimated"}
    print(f"\nwith --estimate: {both_s:.1f} s; shape {doc['shape']}, torch {doc['device']['torch']}")
    print("batch  amp    measured GiB  estimated GiB   error   | reserved meas/est GiB | device meas/est GiB")
    rows = []
    for r in doc["results"]:
        e = estimated.get((r["batch_size"], r["amp"]))
        if r["mode"] != "measured" or e is None:
            continue
        error = (e["peak_bytes"] - r["peak_bytes"]) / r["peak_bytes"] if r["status"] == "ok" else None
        rows.append(
            {
                "batch_size": r["batch_size"],
                "amp": r["amp"],
                "status": r["status"],
                "measured": {k: r[k] for k in ("peak_bytes", "reserved_bytes", "device_bytes", "step_time_s")},
                "estimated": {k: e[k] for k in ("peak_bytes", "reserved_bytes", "device_bytes")},
                "error": error,
            }
        )
        verdict = "–" if error is None else f"{error:+7.1%} {'ok' if abs(error) <= ERROR_TARGET else 'OUT'}"
        print(
            f"{r['batch_size']:>5}  {r['amp']:<5} {gib(r['peak_bytes'])}     {gib(e['peak_bytes'])}    "
            f"{verdict:>11} | {gib(r['reserved_bytes'])} {gib(e['reserved_bytes'])}   | "
            f"{gib(r['device_bytes'])} {gib(e['device_bytes'])}" + ("" if r["status"] == "ok" else f"  ({r['status']})")
        )
    errors = [abs(row["error"]) for row in rows if row["error"] is not None]
    within = sum(e <= ERROR_TARGET for e in errors)
    print(
        f"\nestimate within ±{ERROR_TARGET:.0%} of the measured peak: {within}/{len(errors)} points"
        + (f", worst {max(errors):.1%}" if errors else "")
    )

    if args.save:
        name = re.sub(r"[^A-Za-z0-9]+", "-", doc["device"]["name"]).strip("-")
        today = datetime.date.today().isoformat()
        path = CALIBRATION_DIR / f"{name}-{args.profile}-{today}.json"
        CALIBRATION_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    "gpu": doc["device"]["name"],
                    "gpu_total_bytes": doc["device"]["total_bytes"],
                    "torch": doc["device"]["torch"],
                    "cuda": torch.version.cuda,
                    "date": today,
                    "profile": args.profile,
                    "shape": doc["shape"],
                    "measured_sweep_s": sweep_s,
                    "points": rows,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"calibration record: {path}")
    return 0 if errors and within == len(errors) and sweep_s < SWEEP_TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
