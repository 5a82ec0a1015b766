"""Mutated COCO exports through `train` (1 step, tiny profile) and `evaluate`: how many end in a traceback?

A clean COCO export (6 train, 3 val images) is trained for 1 step once for a checkpoint; then each of N
mutants (seeded: one to three random edits of a field, an entry or a list of the training and validation
files) goes through `train --max-steps 1` and `evaluate --weights`, in this process through the CLI. A run
counts as a traceback when the command ends in an exception other than the one-line user error (exit 1 or 2
with an `error:` line). Prints the counts and the first traceback's last line per mutation kind.

    python benchmarks/fuzz_coco_exports.py [N] [SEED]

Measured 2026-12-07, N=100, seed 0, OMP_NUM_THREADS=1, on a 2-core AMD EPYC VM shared with other agents
(about 4 min after, 6 min before): before the one validation (commit 2a6b383), train 13 tracebacks /
24 one-line errors / 63 ok, evaluate 23 / 10 / 67 (TypeError: unhashable type: 'list', '<' between
NoneType and int, float NaN to integer, KeyError 'id', ...); after, train 0 / 59 / 41, evaluate 0 / 52 / 48.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from exports import coco_export  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from detrdoctor.cli import app  # noqa: E402

VALUES: list[Any] = [None, "x", "1", 1.5, -1, 0, 10**12, True, [], {}, [[[]]], float("nan"), "images\\a.jpg"]
FIELDS = {
    "images": ["id", "file_name", "width", "height"],
    "annotations": ["id", "image_id", "category_id", "bbox", "iscrowd", "area"],
    "categories": ["id", "name"],
}


def mutate(data: dict[str, Any], rng: random.Random) -> str:
    """One random edit of `data` in place; returns its kind (e.g. "annotations.bbox=value")."""
    section = rng.choice(list(FIELDS))
    entries = data[section]
    action = rng.choice(["value", "value", "value", "delete", "duplicate", "empty"])
    if action == "empty":
        data[section] = []
        return f"{section}=[]"
    if not entries:
        return f"{section}: nothing to edit"
    k = rng.randrange(len(entries))
    if action == "duplicate":
        entries.append(copy.deepcopy(entries[k]))
        return f"{section}: entry repeated"
    field = rng.choice(FIELDS[section])
    if action == "delete":
        entries[k].pop(field, None)
        return f"{section}.{field} deleted"
    value = rng.choice(VALUES)
    if field == "bbox" and rng.random() < 0.5:
        value = [rng.choice([v for v in VALUES if not isinstance(v, (list, dict))]) for _ in range(4)]
    entries[k][field] = value
    return f"{section}.{field}={type(value).__name__}"


def run(args: list[str]) -> tuple[str, str]:
    """(outcome, detail): ok, error (one line, non-zero exit) or traceback."""
    result = CliRunner().invoke(app, args)
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        if result.exit_code == 0:
            return "ok", ""
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        return ("error", errors[0]) if errors else ("traceback", result.output.strip().splitlines()[-1:][0])
    last = traceback.format_exception(type(exc), exc, exc.__traceback__)[-1].strip()
    return "traceback", last


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = coco_export(Path(tmp) / "clean")
        common = ["--profile", "tiny", "--no-dashboard", "--eval-every", "0", "--num-workers", "0"]
        outcome, detail = run(
            ["train", "--coco-path", str(base), "--output-dir", f"{tmp}/base", "--max-steps", "1", *common]
        )
        assert outcome == "ok", detail
        weights = f"{tmp}/base/checkpoint.pth"
        files = [base / "annotations" / f"instances_{s}2017.json" for s in ("train", "val")]
        originals = [json.loads(f.read_text()) for f in files]
        tallies: dict[str, Counter[str]] = {"train": Counter(), "evaluate": Counter()}
        tracebacks: dict[str, str] = {}
        for n in range(count):
            mutants = copy.deepcopy(originals)
            kinds = [mutate(mutants[rng.randrange(2)], rng) for _ in range(rng.randint(1, 3))]
            for f, data in zip(files, mutants):
                f.write_text(json.dumps(data))
            for command, args in (
                (
                    "train",
                    ["train", "--coco-path", str(base), "--output-dir", f"{tmp}/run{n}", "--max-steps", "1", *common],
                ),
                ("evaluate", ["evaluate", "--weights", weights, "--coco-path", str(base), "--num-workers", "0"]),
            ):
                outcome, detail = run(args)
                tallies[command][outcome] += 1
                if outcome == "traceback":
                    tracebacks.setdefault(f"{command}: {' + '.join(kinds)}", detail)
                print(f"{n} {command} {outcome}: {' + '.join(kinds)}: {detail[:160]}", flush=True)
    for command, tally in tallies.items():
        print(
            f"{command}: {tally['traceback']} tracebacks, {tally['error']} one-line errors, {tally['ok']} ok of {count}"
        )
    for where, last in tracebacks.items():
        print(f"  {where}: {last}")


if __name__ == "__main__":
    main()
