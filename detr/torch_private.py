"""Every private PyTorch API this project relies on, each behind one helper.

They are private because they are faster (the fused `_foreach_*` kernels), or the only way to do a thing
(fake tensors, dispatch modes, the allocator's history). A torch upgrade may move or change any of them:
`tests/unit/test_torch_private.py` exercises each one, so such an upgrade fails there, loudly, not mid-run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

if TYPE_CHECKING:
    from torch.autograd.graph import Node

__all__ = [
    "DataDependentOutputException",
    "FakeTensorMode",
    "TorchDispatchMode",
    "dump_memory_snapshot",
    "efficient_attention",
    "foreach_lerp_",
    "foreach_mul_",
    "foreach_norm",
    "foreach_sub",
    "node_sequence_nr",
    "record_memory_history",
    "scaler_scale",
    "shutdown_loader_workers",
    "storage_key",
    "tree_leaves",
]


def foreach_norm(tensors: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
    """The L2 norm of every tensor, stacked: one fused pass instead of a kernel launch per tensor."""
    return torch.stack(torch._foreach_norm(tensors))


def foreach_mul_(tensors: list[Tensor], factor: Tensor) -> None:
    """Multiply every tensor in place by a 0-dim tensor (no host synchronisation)."""
    torch._foreach_mul_(tensors, factor)


def foreach_lerp_(tensors: list[Tensor], targets: list[Tensor], weight: float) -> None:
    """tensors += weight · (targets − tensors), in place, in one fused pass."""
    torch._foreach_lerp_(tensors, targets, weight)


def foreach_sub(tensors: list[Tensor], others: list[Tensor]) -> tuple[Tensor, ...]:
    """tensors − others, elementwise per pair, as new tensors."""
    return torch._foreach_sub(tensors, others)


def scaler_scale(scaler: torch.amp.GradScaler) -> Tensor:
    """The GradScaler's current loss scale as a device tensor: reading it does not synchronise
    (`get_scale()` would copy it to the host)."""
    scale = scaler._get_scale_async()
    assert scale is not None, "the scale exists from the first scaler.scale(loss) on"
    return scale


def record_memory_history(max_entries: int | None) -> None:
    """Start recording the CUDA caching allocator's history (None stops it), for a memory snapshot."""
    if max_entries is None:
        torch.cuda.memory._record_memory_history(enabled=None)
    else:
        torch.cuda.memory._record_memory_history(max_entries=max_entries)


def dump_memory_snapshot(path: str) -> None:
    """Write the recorded allocator history (open it at pytorch.org/memory_viz)."""
    torch.cuda.memory._dump_snapshot(path)


def efficient_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None,
    compute_grad: bool,
    dropout_p: float,
    is_causal: bool,
    scale: float | None,
) -> Tensor:
    """The CUDA memory-efficient attention kernel called directly (memprofile estimates with it: SDPA's own
    kernel choice sees no GPU behind fake tensors)."""
    return torch.ops.aten._scaled_dot_product_efficient_attention(
        query, key, value, attn_mask, compute_grad, dropout_p, is_causal, scale=scale
    )[0]


def shutdown_loader_workers(iterator: object) -> None:
    """End a DataLoader iterator's worker processes now. An iterator left inside a fetch that never returns would
    keep them alive, holding what they inherited (the run folder's lock), until the process exits."""
    shutdown = getattr(iterator, "_shutdown_workers", None)  # only multi-process iterators have workers
    if shutdown is not None:
        shutdown()


def storage_key(tensor: Tensor) -> int:
    """An identity of the tensor's storage, shared by every view of it."""
    return tensor.untyped_storage()._cdata


def node_sequence_nr(node: Node) -> int:
    """The autograd node's creation number: the engine runs later-created nodes first."""
    return node._sequence_nr()
