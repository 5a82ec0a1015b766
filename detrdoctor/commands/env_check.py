"""`detrdoctor env-check`: collect facts about the environment, judge them with plain rules, render the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from detrdoctor.options import (
    Json,
    TrainAnnotations,
    TrainImages,
    ValAnnotations,
    ValImages,
    data_flag,
    profile_flag,
)


@dataclass(frozen=True, kw_only=True)
class EnvCheckOptions:
    """The flags of `env-check`; the dataset flags go to the dataset probe, which builds its RunConfig."""

    json_output: Json = False
    coco_path: Annotated[str | None, data_flag("Also check a COCO-format dataset folder.")] = None
    strict: Annotated[bool, typer.Option(help="Exit 1 on warnings too.")] = False
    from_facts: Annotated[
        str | None, typer.Option("--from", help="Judge facts collected elsewhere (a previous --json output).")
    ] = None
    device: Annotated[str, typer.Option(help="auto, cpu or cuda: with cuda, a missing GPU is a failure.")] = "auto"
    num_workers: Annotated[int | None, typer.Option(help="The num_workers you plan to use.")] = None
    profile: Annotated[
        str | None, profile_flag("detr-r50; with --coco-path: the profile the dataset is judged against")
    ] = None
    train_annotations: TrainAnnotations = None
    val_annotations: ValAnnotations = None
    train_images: TrainImages = None
    val_images: ValImages = None


def run_env_check(options: EnvCheckOptions) -> int:
    """Judge the whole stack (torch, torchvision, CUDA, NumPy, pycocotools, NVML, host limits) and name each fix.

    Exit 1 when a check fails (--strict: or warns).
    """
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
        from detrdoctor.options import config_overrides

        flags = config_overrides(options).get("data", {})  # the layout flags given (--coco-path is the root)
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
