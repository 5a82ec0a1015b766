"""Loading official (and our own) DETR checkpoints safely, and explaining the ones that don't fit."""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import re
from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detr.config import DETRConfig
from detr.errors import CheckpointError

SHOWN_KEYS = 3  # how many keys of each kind a mismatch message names
# (block type, number of layer3 blocks) → torchvision ResNet
RESNET_BY_BLOCKS = {
    ("basic", 2): "resnet18",
    ("basic", 6): "resnet34",
    ("bottleneck", 6): "resnet50",
    ("bottleneck", 23): "resnet101",
}
PANOPTIC_NUM_CLASSES = 250
# Tensors whose first dimension counts what the config says, and which config field that is: when only that
# count differs, fine-tuning starts them afresh (see `load_fitting_state_dict`).
REINITIALISABLE = {
    "class_embed.weight": "num_classes",
    "class_embed.bias": "num_classes",
    "query_embed.weight": "num_queries",
}


def load_checkpoint_file(path_or_url: str | Path) -> dict[str, Any]:
    """The whole checkpoint in a file or http(s) URL (model, optimizer, args, ... or a bare state_dict).

    Always `weights_only=True`, so a checkpoint cannot run code while loading. Official training
    checkpoints also hold their command-line arguments as an `argparse.Namespace`; that class is
    allowlisted because rebuilding it only sets plain attributes, it calls nothing.
    """
    source = str(path_or_url)
    is_url = source.startswith(("http://", "https://"))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            if is_url:
                # Through the torch hub cache: downloaded once, checked against the hash in its file name.
                checkpoint = torch.hub.load_state_dict_from_url(
                    source, map_location="cpu", check_hash=True, weights_only=True
                )
            else:
                checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {source} not found") from None
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e) or "Unsupported operand" in str(e):  # bytes that are no pickle
            raise CheckpointError(f"{source} is not a readable PyTorch checkpoint (not a pickle)") from None
        reason = re.search(r"WeightsUnpickler error: ([^\n]*?)\.? Please", str(e))
        raise CheckpointError(
            f"{source} contains pickled code/objects and torch.load(weights_only=True) refused it"
            f"{f' ({reason.group(1)})' if reason else ''}; only tensors and plain containers are loaded, "
            "so that a checkpoint can never run code"
        ) from None
    except OSError as e:
        if is_url:
            cause = getattr(e, "cause", None) or e
            raise CheckpointError(
                f"could not download {source} ({cause}); download it and pass the file path"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {source} ({e.strerror or e})") from None
    except Exception as e:  # torch.load reports a truncated or foreign file with many exception types
        raise CheckpointError(f"{source} is not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"{source} holds a {type(checkpoint).__name__}, not a checkpoint dictionary")
    return dict(checkpoint)


def load_checkpoint_state_dict(path_or_url: str | Path) -> dict[str, Tensor]:
    """The model state_dict of a checkpoint file or URL: `{'model': sd}` or a bare sd, `module.` removed."""
    return model_state_dict(load_checkpoint_file(path_or_url), str(path_or_url))


def model_state_dict(checkpoint: Mapping[str, Any], source: str) -> dict[str, Tensor]:
    """The model weights of a loaded checkpoint: the weight average 'model_ema' of a run trained with one
    (what its evaluations scored), else 'model', else the checkpoint itself if it is a state_dict."""
    state_dict = checkpoint.get("model_ema", checkpoint.get("model", checkpoint))
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{source} holds neither a state_dict nor {{'model': state_dict}}")
    # Checkpoints saved from a DistributedDataParallel wrapper prefix every key with `module.`.
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def load_model_weights(model: nn.Module, path_or_url: str | Path, cfg: DETRConfig) -> None:
    """Load a checkpoint into `model` (built from `cfg`) with strict=True, or explain in one line why it doesn't fit."""
    load_state_dict_into(model, load_checkpoint_state_dict(path_or_url), str(path_or_url), cfg)


def load_state_dict_into(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str, cfg: DETRConfig | None = None
) -> None:
    """`model.load_state_dict(state_dict, strict=True)`, with a one-line CheckpointError naming the keys that
    don't fit and the config that would. Without `cfg`, the model's own weights tell its config."""
    state_dict = model_state_dict(state_dict, source)
    _raise_if_mismatched(describe_mismatch(model.state_dict(), state_dict), state_dict, source, cfg, model)
    model.load_state_dict(state_dict, strict=True)


def load_fitting_state_dict(
    model: nn.Module, state_dict: Mapping[str, Tensor], source: str, cfg: DETRConfig | None = None
) -> list[str]:
    """Load a checkpoint to fine-tune from: every tensor that fits, and the names of those that keep the model's
    fresh initialisation — the class head when only the class count differs, the query embeddings when only
    `num_queries` does (the usual surgery for a dataset of other classes, as in facebookresearch/detr#9).

    Those tensors are left as `build_model` initialised them, so they start exactly as in a fresh model.
    Anything else that does not fit (another backbone, width or depth) is the one-line CheckpointError of
    `load_state_dict_into`.
    """
    state_dict = model_state_dict(state_dict, source)
    expected = model.state_dict()
    # A field's tensors start afresh together, and only if in each of them the count alone differs (not the width).
    fresh_fields = {
        field
        for field in set(REINITIALISABLE.values())
        if all(_only_count_differs(state_dict, expected, k) for k, f in REINITIALISABLE.items() if f == field)
    }
    reinitialised = [k for k, field in REINITIALISABLE.items() if field in fresh_fields]
    kept = {k: v for k, v in state_dict.items() if k not in reinitialised}
    mismatch = describe_mismatch({k: v for k, v in expected.items() if k not in reinitialised}, kept)
    # The advice leaves out num_classes and num_queries: fine-tuning adapts to those by itself.
    _raise_if_mismatched(mismatch, state_dict, source, cfg, model, may_differ=set(REINITIALISABLE.values()))
    model.load_state_dict(kept, strict=False)  # the keys left out are exactly `reinitialised`: checked above
    return reinitialised


def _only_count_differs(state_dict: Mapping[str, Tensor], expected: Mapping[str, Tensor], key: str) -> bool:
    """The tensor differs in its first dimension (a count) only."""
    if key not in state_dict or key not in expected:
        return False
    shape, wanted = state_dict[key].shape, expected[key].shape
    return shape != wanted and shape[1:] == wanted[1:]


def _raise_if_mismatched(
    mismatch: str,
    state_dict: Mapping[str, Tensor],
    source: str,
    cfg: DETRConfig | None,
    model: nn.Module,
    may_differ: Set[str] = frozenset(),
) -> None:
    """A CheckpointError for a `describe_mismatch` result, with the config that would fit; nothing when ''."""
    if mismatch:
        current = dataclasses.asdict(cfg) if cfg is not None else infer_config_from_state_dict(model.state_dict())
        advice = _suggest_config(state_dict, current, may_differ)
        raise CheckpointError(f"checkpoint {source} does not fit the model: {mismatch}; {advice}")


def infer_config_from_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """The DETRConfig fields a state_dict reveals (those it can't are left out).

    `nheads` and `dilation` leave no trace in the weights. A segmentation (panoptic) checkpoint nests
    the detector under `detr.`; it is read through.
    """
    state_dict = {k.removeprefix("module."): v for k, v in state_dict.items()}
    if "class_embed.weight" not in state_dict and "detr.class_embed.weight" in state_dict:
        state_dict = {k.removeprefix("detr."): v for k, v in state_dict.items() if k.startswith("detr.")}
    config: dict[str, Any] = {}
    if "class_embed.weight" in state_dict:
        config["num_classes"] = state_dict["class_embed.weight"].shape[0] - 1
    if "query_embed.weight" in state_dict:
        config["num_queries"], config["hidden_dim"] = state_dict["query_embed.weight"].shape
    for part in ("encoder", "decoder"):
        layers = _count_children(state_dict, f"transformer.{part}.layers.")
        if layers:
            config[f"{part[:3]}_layers"] = layers
    if "transformer.encoder.layers.0.linear1.weight" in state_dict:
        config["dim_feedforward"] = state_dict["transformer.encoder.layers.0.linear1.weight"].shape[0]
    backbone = _infer_backbone(state_dict)
    if backbone:
        config["backbone"] = backbone
    return config


def _infer_backbone(state_dict: Mapping[str, Tensor]) -> str | None:
    body = "backbone.0.body."
    if f"{body}layer3.0.conv1.weight" not in state_dict:
        return None
    block = "bottleneck" if f"{body}layer3.0.conv3.weight" in state_dict else "basic"
    return RESNET_BY_BLOCKS.get((block, _count_children(state_dict, f"{body}layer3.")))


def _count_children(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    """How many numbered children `prefix` + `N.*` the keys name."""
    return len({k[len(prefix) :].split(".", 1)[0] for k in state_dict if k.startswith(prefix)})


def describe_mismatch(expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]) -> str:
    """The missing, unexpected and mis-shaped keys of `state_dict` against `expected`, or '' when it fits."""
    missing = [k for k in expected if k not in state_dict]
    # FrozenBatchNorm2d drops the BatchNorm step counter on load; it is not a mismatch.
    unexpected = [k for k in state_dict if k not in expected and not _is_dropped_bn_counter(k, expected)]
    misshaped = [
        f"{k} {_shape(state_dict[k])} vs {_shape(v)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    parts = [
        f"{len(keys)} {kind} keys ({', '.join(keys[:SHOWN_KEYS])}{', ...' if len(keys) > SHOWN_KEYS else ''})"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
        if keys
    ]
    return ", ".join(parts)


def _is_dropped_bn_counter(key: str, expected: Mapping[str, Tensor]) -> bool:
    return key.endswith(".num_batches_tracked") and key.removesuffix("num_batches_tracked") + "running_mean" in expected


def _shape(t: Tensor) -> str:
    return "[" + ",".join(str(d) for d in t.shape) + "]"


def _suggest_config(
    state_dict: Mapping[str, Tensor], current: Mapping[str, Any], may_differ: Set[str] = frozenset()
) -> str:
    """What the checkpoint looks like, and the config fields to change to load it (other than `may_differ`)."""
    inferred = infer_config_from_state_dict(state_dict)
    if "num_classes" not in inferred:
        return "it does not look like a DETR detection checkpoint (no class_embed.weight)"
    described = ", ".join(
        f"{k}={v}" + (" (a panoptic checkpoint)" if k == "num_classes" and v == PANOPTIC_NUM_CLASSES else "")
        for k, v in inferred.items()
    )
    different = [f"{k}={v}" for k, v in inferred.items() if current.get(k) != v and k not in may_differ]
    if different:
        advice = f"set {', '.join(different)} in the [model] section of the profile to load it"
    else:
        advice = "those match the model's config, so the key layout itself differs"
    if any(k.startswith("detr.") for k in state_dict):
        advice += "; its keys are nested under 'detr.' with a mask head: a segmentation model, not a detector"
    return f"it looks like {described}; {advice}"


def category_names(checkpoint: Mapping[str, Any], coco: Any = None) -> dict[int, str]:
    """Category id → name for reports: the checkpoint's own categories, over those of the dataset scored (if any)."""
    dataset = coco_category_names(coco) if coco is not None else {}
    return dataset | checkpoint_categories(checkpoint)


def coco_category_names(coco: Any) -> dict[int, str]:
    """Category id → name from a COCO index (its "name", else the id)."""
    return {int(i): str(c.get("name", i)) for i, c in coco.cats.items()}


def checkpoint_categories(checkpoint: Mapping[str, Any]) -> dict[int, str]:
    """Category id → name from a checkpoint's top-level "categories" ([{"id", "name"}], written by our trainer);
    empty for a checkpoint without them (the official ones), whose readers then fall back to ids or the dataset."""
    categories = checkpoint.get("categories")
    if not isinstance(categories, list):
        return {}
    return {
        int(c["id"]): str(c["name"])
        for c in categories
        if isinstance(c, Mapping) and isinstance(c.get("id"), int) and isinstance(c.get("name"), str)
    }
