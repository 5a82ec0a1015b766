"""`detrdoctor env-check`: collect facts about the environment, judge them with plain rules, render the verdict."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EnvCheckOptions:
    json_output: bool
    coco_path: str | None
    strict: bool
    from_facts: str | None
    device: str
    num_workers: int | None
    profile: str | None
    train_annotations: str | None
    val_annotations: str | None
    train_images: str | None
    val_images: str | None


def run_env_check(options: EnvCheckOptions) -> int:
    """Collect (or load with --from), judge and render; the exit code is 1 when a check fails (--strict: or warns)."""
    from detr.engine.device import parse_device
    from detr.errors import ConfigError
    from detrdoctor.envcheck.collect import collect, load_facts
    from detrdoctor.envcheck.render import render_json
    from detrdoctor.envcheck.rules import judge
    from detrdoctor.verdict import render_table, summarize

    parse_device(options.device)
    if options.num_workers is not None and options.num_workers < 0:
        raise ConfigError(f"--num-workers {options.num_workers}: must be ≥ 0")
    if options.from_facts:
        if options.coco_path or options.profile:
            raise ConfigError("--coco-path/--profile and --from don't mix: the dataset facts come from the file")
        facts = load_facts(options.from_facts)
        # Options given here re-ask the question (e.g. --device cuda on a node's facts); otherwise keep the node's.
        facts["options"] = dict(facts.get("options") or {})
        if options.device != "auto":
            facts["options"]["device"] = options.device
        if options.num_workers is not None:
            facts["options"]["num_workers"] = options.num_workers
        source = f"facts from {options.from_facts} ({facts.get('hostname', '?')}, {facts.get('collected_at', '?')})"
    else:
        from detrdoctor.commands.common import data_flags

        flags = {k: v for k, v in data_flags(options).items() if v is not None}
        dataset = {"coco_path": options.coco_path, "profile": options.profile, "data": flags}
        facts = collect(options.device, options.num_workers, dataset if options.coco_path or flags else None)
        python = facts["python"]
        source = f"{facts['hostname']} · Python {python['version']} · collected in {facts['elapsed_s']:.1f} s"
    checks = judge(facts)
    summary = summarize(checks, options.strict)
    if options.json_output:
        render_json(checks, summary, facts)
    else:
        render_table(checks, summary, source)
    return int(summary["exit_code"])
