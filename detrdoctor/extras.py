"""Optional extras (matplotlib for `plot`, tensorboard for `train --tensorboard`): imported on demand, or one line
naming the pip command."""

from __future__ import annotations

import importlib
from types import ModuleType

from detr.errors import ConfigError


def require(module: str, extra: str, package: str, purpose: str) -> ModuleType:
    """`module` imported, or a ConfigError naming the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{purpose} needs {package}, which is not installed: "
            f"pip install 'detrdoctor[{extra}]' (or pip install {package})"
        ) from None
