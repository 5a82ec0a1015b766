"""Named presets: each `NAME.toml` beside this file is a profile (installed as `detrdoctor.profiles`)."""

from __future__ import annotations

from pathlib import Path

from detr.config import RunConfig, load_config_file
from detr.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent


def available_profiles() -> dict[str, Path]:
    """Profile name → TOML file, sorted by name."""
    return {p.stem: p for p in sorted(PROFILE_DIR.glob("*.toml"))}


def resolve_profile(name_or_path: str) -> Path:
    """A profile name (e.g. `demo`) or a path to a TOML file → the file."""
    profiles = available_profiles()
    if name_or_path in profiles:
        return profiles[name_or_path]
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"profile file '{path}' not found")
        return path
    raise ConfigError(
        f"unknown profile '{name_or_path}' (available: {', '.join(profiles)}; or give a path to a .toml file)"
    )


def load_profile(name_or_path: str) -> RunConfig:
    """Load a named profile or a TOML file into a RunConfig."""
    return load_config_file(resolve_profile(name_or_path))


def profile_summaries() -> dict[str, str]:
    """Profile name → its one-line description."""
    return {name: load_config_file(path).description for name, path in available_profiles().items()}
