"""What several commands share: which profile to start from, and profile + flags → one RunConfig."""

from __future__ import annotations

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
    apply_flags(cfg, with_coco_path(overrides or {}, coco_path))
    validate(cfg)
    return cfg


def with_coco_path(overrides: dict[str, dict[str, Any]], coco_path: str | None) -> dict[str, dict[str, Any]]:
    """`overrides` with --coco-path added to its [data] keys (a plain {"data": ...} merge drops one of them)."""
    return {**overrides, "data": {"coco_path": coco_path, **overrides.get("data", {})}}


def apply_flags(cfg: RunConfig, overrides: dict[str, dict[str, Any]]) -> None:
    """Set the given flags (None: not given) on `cfg`, section by section."""
    from detr.config import apply_overrides

    for section, values in overrides.items():
        given = {key: value for key, value in values.items() if value is not None}
        apply_overrides(getattr(cfg, section), given, f"[{section}]")


DATA_FLAGS = ("train_annotations", "val_annotations", "train_images", "val_images")


def data_flags(options: Any) -> dict[str, Any]:
    """The dataset-location flags of a command's options, as [data] keys (None: not given)."""
    return {key: getattr(options, key) for key in DATA_FLAGS}


def announce_layout(cfg: RunConfig) -> None:
    """Say on stderr which dataset layout was found (stdout may be --json); DataError when none fits."""
    from rich.console import Console
    from rich.markup import escape

    from detr.data import find_layout
    from detr.data.split import layout_line

    if not cfg.data.coco_path and not any(getattr(cfg.data, key) for key in DATA_FLAGS):
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
