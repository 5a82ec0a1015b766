"""DETR's top-level parts as the memory breakdown names them, and the hooks that attribute work to them.

Forward allocations take the group of the module running; backward ones the group of the module whose
forward created the autograd node, recorded in the node's metadata as each module returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from detr.model import MODEL_PARTS, OTHER_PART, model_part
from detr.torch_private import tree_leaves
from detrdoctor.memprofile.tracker import MemoryAccount

HEADS = ("input_proj", "queries", "class_head", "box_head")  # DETR's parts that the breakdown counts as "heads"
OTHER = OTHER_PART
# Module path → breakdown group; glue code and the loss are "other".
GROUPS = {path: "heads" if part in HEADS else part for path, part in MODEL_PARTS.items()}
_NODE_KEY = "memprofile_group"


def group_of(name: str) -> str:
    """The breakdown group of a module, parameter or buffer by its qualified name."""
    part = model_part(name)
    return "heads" if part in HEADS else part


def node_group(node: torch.autograd.graph.Node) -> str:
    """The group recorded on an autograd node (OTHER when none was)."""
    return _metadata(node).get(_NODE_KEY, OTHER)


def _metadata(node: torch.autograd.graph.Node) -> dict:
    """The node's own dict: a property at runtime, which torch's type stub declares as a method."""
    return node.metadata  # type: ignore[return-value]


OnLabel = Callable[[torch.autograd.graph.Node, str], None]


def label_graph(outputs: object, group: str, on_label: OnLabel | None = None) -> None:
    """Record `group` on every autograd node behind `outputs` that has none yet."""
    stack = [t.grad_fn for t in tree_leaves(outputs) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if _NODE_KEY in _metadata(node):
            continue
        _metadata(node)[_NODE_KEY] = group
        if on_label is not None:
            on_label(node, group)
        stack.extend(n for n, _ in node.next_functions if n is not None)


@contextmanager
def attribute_groups(model: nn.Module, tracker: MemoryAccount, on_label: OnLabel | None = None) -> Iterator[None]:
    """While active, each grouped module's forward allocates under its group and labels its autograd nodes."""
    handles = []
    for name, module in model.named_modules():
        if name not in GROUPS:
            continue
        group = GROUPS[name]
        saved: list[str] = []

        def pre(_module, _args, group=group, saved=saved):
            saved.append(tracker.group)
            tracker.group = group

        def post(_module, _args, output, group=group, saved=saved):
            tracker.group = saved.pop()
            label_graph(output, group, on_label)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
