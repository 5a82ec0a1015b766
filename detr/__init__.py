"""DETR (Carion et al. 2020), faithful to facebookresearch/detr: model, matcher, losses, post-processing, checkpoints.

`import detr` stays light: the modules behind these names (and torchvision with them) load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from detr.config import DETRConfig

_LAZY_EXPORTS = {
    "DETR": "detr.model",
    "build_model": "detr.model",
    "pad_images": "detr.model",
    "HungarianMatcher": "detr.matcher",
    "SetCriterion": "detr.criterion",
    "PostProcess": "detr.postprocess",
    "load_checkpoint_file": "detr.checkpoint",
    "load_checkpoint_state_dict": "detr.checkpoint",
    "load_model_weights": "detr.checkpoint",
    "load_state_dict_into": "detr.checkpoint",
    "infer_config_from_state_dict": "detr.checkpoint",
}

__all__ = ["DETRConfig", *_LAZY_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _LAZY_EXPORTS:
        raise AttributeError(f"module 'detr' has no attribute '{name}'")
    value = getattr(import_module(_LAZY_EXPORTS[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from detr.checkpoint import (
        infer_config_from_state_dict,
        load_checkpoint_file,
        load_checkpoint_state_dict,
        load_model_weights,
        load_state_dict_into,
    )
    from detr.criterion import SetCriterion
    from detr.matcher import HungarianMatcher
    from detr.model import DETR, build_model, pad_images
    from detr.postprocess import PostProcess
