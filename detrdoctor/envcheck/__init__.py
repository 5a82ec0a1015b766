"""`detrdoctor env-check`: collect facts about the environment, judge them with plain rules, render the verdict.

Submodules are imported inside `run_env_check`: the probes run this package as `python -m`, and they must
start without loading rich.
"""

from __future__ import annotations

import re


def run_env_check(
    json_output: bool,
    coco_path: str | None,
    strict: bool,
    from_facts: str | None,
    device: str,
    num_workers: int | None,
) -> int:
    """Collect (or load with --from), judge and render; the exit code is 1 when a check fails (--strict: or warns)."""
    from detr.errors import ConfigError
    from detrdoctor.envcheck.collect import collect, load_facts
    from detrdoctor.envcheck.render import render_json, render_table
    from detrdoctor.envcheck.rules import judge, summarize

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda")
    if num_workers is not None and num_workers < 0:
        raise ConfigError(f"--num-workers {num_workers}: must be ≥ 0")
    if from_facts:
        if coco_path:
            raise ConfigError("--coco-path and --from don't mix: the dataset facts come from the file")
        facts = load_facts(from_facts)
        # Options given here re-ask the question (e.g. --device cuda on a node's facts); otherwise keep the node's.
        facts["options"] = dict(facts.get("options") or {})
        if device != "auto":
            facts["options"]["device"] = device
        if num_workers is not None:
            facts["options"]["num_workers"] = num_workers
        source = f"facts from {from_facts} ({facts.get('hostname', '?')}, {facts.get('collected_at', '?')})"
    else:
        facts = collect(device, num_workers, coco_path)
        python = facts["python"]
        source = f"{facts['hostname']} · Python {python['version']} · collected in {facts['elapsed_s']:.1f} s"
    checks = judge(facts)
    summary = summarize(checks, strict)
    if json_output:
        render_json(checks, summary, facts)
    else:
        render_table(checks, summary, source)
    return int(summary["exit_code"])
