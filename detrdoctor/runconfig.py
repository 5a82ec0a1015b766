"""Profile + flags → one RunConfig, and the configuration of a run folder, a checkpoint or weights.

What several commands share, below them: `commands/` and the packages they call (memprofile, loaderbench,
envcheck's probes) build their RunConfig here. Nothing here imports torch at module level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detr.config import RunConfig


def default_profile(profile: str | None, coco_path: str | None) -> str:
    """--profile, else detr-r50 for a real dataset (--coco-path), else the synthetic demo."""
    return profile or ("detr-r50" if coco_path else "demo")


def load_run_config(
    profile: str | None, coco_path: str | None, overrides: dict[str, dict[str, Any]] | None = None
) -> RunConfig:
    """The profile's configuration with the flags that were given (not None) applied and validated.

    `overrides` maps a config section to its keys, e.g. {"train": {"lr": 1e-4}}; keys are checked and
    typed by `detr.config.apply_overrides`, so a misspelt key fails here, naming it.
    """
    from detr.config import validate
    from detrdoctor.profiles import load_profile

    cfg = load_profile(default_profile(profile, coco_path))
    overrides = overrides or {}
    apply_flags(cfg, {**overrides, "data": {"coco_path": coco_path, **overrides.get("data", {})}})
    validate(cfg)
    return cfg


def apply_flags(cfg: RunConfig, overrides: dict[str, dict[str, Any]]) -> None:
    """Set the given flags (None: not given) on `cfg`, section by section."""
    from detr.config import apply_overrides

    for section, values in overrides.items():
        given = {key: value for key, value in values.items() if value is not None}
        apply_overrides(getattr(cfg, section), given, f"[{section}]")


# The [data] keys that place a dataset's parts (the layout finds what they leave out).
LAYOUT_KEYS = ("train_annotations", "val_annotations", "train_images", "val_images")


def announce_layout(cfg: RunConfig) -> None:
    """Say on stderr which dataset layout was found (stdout may be --json); DataError when none fits."""
    from rich.console import Console
    from rich.markup import escape

    from detr.data import find_layout
    from detr.data.split import layout_line

    if not cfg.data.coco_path and not any(getattr(cfg.data, key) for key in LAYOUT_KEYS):
        return  # the synthetic dataset: nothing to recognise
    layout = find_layout(cfg.data)
    Console(stderr=True, highlight=False).print(f"dataset: {escape(layout_line(layout))}", soft_wrap=True)


def env_check_command(cfg: RunConfig, profile: str | None) -> str:
    """The env-check command line that judges this dataset as this run would: the flags given, repeated."""
    from detr.data.layout import given_flags

    parts = ["detrdoctor env-check", given_flags(cfg.data)]
    if profile:
        import shlex

        parts.append(f"--profile {shlex.quote(profile)}")
    return " ".join(p for p in parts if p)


def config_of_run(checkpoint: str) -> RunConfig | None:
    """A run's configuration: the `config.toml` beside its checkpoint, else the checkpoint's own `args`.

    None for a checkpoint that holds neither (an official one): the profile then decides.
    """
    from detr.config import load_config_file

    beside = Path(checkpoint).expanduser().parent / "config.toml"
    if beside.is_file():
        return load_config_file(beside)
    from detr.checkpoint import load_checkpoint_file

    return config_of_checkpoint(load_checkpoint_file(checkpoint), checkpoint)


def config_of_checkpoint(ckpt: dict[str, Any], source: str) -> RunConfig | None:
    """The RunConfig a checkpoint of ours was trained with (its `args`), or None for other checkpoints."""
    from detr.config import config_from_dict

    args = ckpt.get("args")
    if isinstance(args, dict) and "model" in args:
        return config_from_dict({k: v for k, v in args.items() if k != "description"}, f"{source} (args)")
    return None


def config_for_weights(
    weights: str, profile: str | None, overrides: dict[str, dict[str, Any]]
) -> tuple[RunConfig, dict[str, Any]]:
    """The config to run `weights` with, and the loaded checkpoint: the profile if given, else the checkpoint's
    own, else detr-r50 with what the weights reveal (class count, queries, layers, backbone); num_classes
    "auto" takes the weights'. The flags in `overrides` apply on top, validated; no backbone weights are
    fetched (the checkpoint carries the backbone)."""
    from detr import infer_config_from_state_dict
    from detr.checkpoint import load_checkpoint_file, model_state_dict
    from detr.config import AUTO, validate
    from detr.errors import CheckpointError
    from detrdoctor.profiles import load_profile

    ckpt = load_checkpoint_file(weights_file(weights))
    try:
        inferred = infer_config_from_state_dict(model_state_dict(ckpt, weights))
    except CheckpointError:  # not weights at all: loading them says so, in one line
        inferred = {}
    cfg = load_profile(profile) if profile else config_of_checkpoint(ckpt, weights)
    if cfg is None:
        cfg = load_profile("detr-r50")
        for key, value in inferred.items():
            if hasattr(cfg.model, key):
                setattr(cfg.model, key, value)
    if cfg.model.num_classes == AUTO and "num_classes" in inferred:  # the weights decide the classifier's size
        cfg.model.num_classes = inferred["num_classes"]
    apply_flags(cfg, overrides)
    validate(cfg)
    cfg.model.backbone_weights = "none"
    return cfg, ckpt


def weights_file(weights: str) -> str:
    """--weights: a file or URL as given; a run folder → its best.pth (else checkpoint.pth), said on stderr."""
    from rich.console import Console
    from rich.markup import escape

    from detr.engine.checkpointing import run_folder_weights

    if weights.startswith(("http://", "https://")):
        return weights
    path = run_folder_weights(weights)
    if str(path) != weights and path != Path(weights):
        Console(stderr=True, highlight=False).print(f"weights: {escape(str(path))}", soft_wrap=True)
    return str(path)
