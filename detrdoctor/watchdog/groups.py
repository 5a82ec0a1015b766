"""DETR's parts as the watchdog's module groups (detr.model.MODEL_PARTS), and the order in which the forward
pass runs the modules.

The order names the culprit of a non-finite gradient: a NaN/inf spreads backwards from where it enters
the backward pass to every module that ran before it, so of the parameters with non-finite gradients,
the one whose module ran last in the forward is where it entered.
"""

from __future__ import annotations

from typing import Any

from detr.model import MODEL_PARTS, OTHER_PART

GROUPS = (*MODEL_PARTS.values(), OTHER_PART)
# Modules whose outputs are checked every step (group → module path): one cheap max per group.
OUTPUT_MODULES = {
    part: path for path, part in MODEL_PARTS.items() if part in ("backbone", "input_proj", "encoder", "decoder")
}


class ForwardOrder:
    """Records the order in which a model's modules are first called, over one forward pass."""

    def __init__(self, model: Any):
        self.first_call: dict[str, int] = {}
        self._handles = [m.register_forward_pre_hook(self._hook(n)) for n, m in model.named_modules()]

    def _hook(self, name: str):
        def hook(module: Any, args: tuple) -> None:
            self.first_call.setdefault(name, len(self.first_call))

        return hook

    def close(self) -> dict[str, int]:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return self.first_call


def owner_call(name: str, first_call: dict[str, int]) -> int:
    """When the module owning a parameter first ran; a module never called itself (an nn.Embedding read
    through `.weight`, the out_proj inside nn.MultiheadAttention) counts as its nearest called parent."""
    path = name
    while path:
        path = path.rpartition(".")[0]
        if path in first_call:
            return first_call[path]
    return first_call.get("", -1)


def forward_rank(names: list[str], first_call: dict[str, int]) -> list[int]:
    """Each parameter's position in forward order: by its module's first call, then by registration."""
    keyed = sorted(range(len(names)), key=lambda i: (owner_call(names[i], first_call), i))
    rank = [0] * len(names)
    for position, index in enumerate(keyed):
        rank[index] = position
    return rank
