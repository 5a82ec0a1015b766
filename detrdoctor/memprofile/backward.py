"""A backward pass run from Python, node by node, for fake CUDA tensors on a machine without a GPU.

PyTorch's autograd engine needs a real CUDA context as soon as a graph holds CUDA tensors, fake or not,
so the estimator walks the graph itself in the engine's order and frees what the engine frees when it
frees it: a node's saved tensors right after the node runs, each gradient once it has been consumed.
Accumulation follows the engine too: in place into a buffer it owns alone, and a parameter's .grad
steals the incoming gradient when that gradient is not shared and has the parameter's layout.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor
from torch.autograd.graph import Node

from detr.torch_private import node_sequence_nr, storage_key


class _Saved:
    """What a saved-tensor pack hook keeps: the tensor, until the node that unpacked it has run."""

    __slots__ = ("tensor",)

    def __init__(self, tensor: Tensor):
        self.tensor: Tensor | None = tensor


class PythonBackward:
    """Record the forward with `recording()`, then `backward(loss)`.

    `on_node(node)` is entered around each node's work, for attribution; `on_grad(param, grad)` is told
    when a gradient becomes a parameter's .grad.
    """

    def __init__(
        self,
        on_node: Callable[[Node], AbstractContextManager] | None = None,
        on_grad: Callable[[Tensor, Tensor], None] | None = None,
    ):
        self._on_node = on_node
        self._on_grad = on_grad
        self._saved: list[_Saved] = []
        self._unpacked: list[_Saved] = []

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Forward code run inside saves its tensors where the backward can release them."""
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield

    def _pack(self, tensor: Tensor) -> _Saved:
        saved = _Saved(tensor)
        self._saved.append(saved)
        return saved

    def _unpack(self, saved: _Saved) -> Tensor:
        self._unpacked.append(saved)
        assert saved.tensor is not None, "a saved tensor is unpacked before its node has run"
        return saved.tensor

    def backward(self, loss: Tensor) -> None:
        """Gradients of the scalar `loss` into the leaves' .grad."""
        root = loss.grad_fn
        assert root is not None, "the loss must depend on tensors that require grad"
        with torch.no_grad():
            self._pending: dict[Node, list[Tensor | None]] = {root: [torch.ones_like(loss)]}
        self._waiting = _dependencies(root)
        self._owners: Counter[int] = Counter()  # storage → how many pending gradient slots hold it
        self._order = itertools.count()
        self._ready = [(-node_sequence_nr(root), next(self._order), root)]
        del root
        while self._ready:
            self._run(heapq.heappop(self._ready)[2])
        # A saved output refers to its own node: emptying every box also breaks those reference cycles.
        for saved in self._saved:
            saved.tensor = None
        self._saved.clear()
        self._unpacked.clear()

    def _run(self, node: Node) -> None:
        grads = self._pending.pop(node)
        for g in grads:
            if g is not None:
                self._owners[_key(g)] -= 1
        with self._scope(node), torch.no_grad():
            if node.name() == "torch::autograd::AccumulateGrad":
                self._accumulate(node.variable, grads[0])  # type: ignore[attr-defined]  # AccumulateGrad's own
                return
            outputs = _as_tuple(node(*grads))  # type: ignore[operator]  # a Node is callable; its stub omits it
            del grads
            self._release_saved()
            for (target, slot), g in zip(node.next_functions, outputs, strict=True):
                if target is None:
                    continue
                buffer = self._pending.setdefault(target, [None] * len(target._input_metadata))
                if g is not None:
                    self._add(buffer, slot, _conform(g, target._input_metadata[slot]))
                self._waiting[target] -= 1
                if self._waiting[target] == 0:
                    del self._waiting[target]
                    heapq.heappush(self._ready, (-node_sequence_nr(target), next(self._order), target))

    def _scope(self, node: Node) -> AbstractContextManager:
        return self._on_node(node) if self._on_node is not None else nullcontext()

    def _release_saved(self) -> None:
        for saved in self._unpacked:
            saved.tensor = None
        self._unpacked.clear()

    def _add(self, buffer: list[Tensor | None], slot: int, grad: Tensor) -> None:
        owners, old = self._owners, buffer[slot]
        if old is None:
            new = grad
        elif owners[_key(old)] == 1 and old._base is None and old.is_contiguous():
            old.add_(grad)
            return
        else:
            owners[_key(old)] -= 1
            new = old + grad
        buffer[slot] = new
        owners[_key(new)] += 1

    def _accumulate(self, param: Tensor, grad: Tensor | None) -> None:
        if grad is None:
            return
        if self._owners[_key(grad)] > 0 or grad.stride() != param.stride():
            grad = torch.empty_strided(param.shape, param.stride(), dtype=param.dtype, device=param.device).copy_(grad)
        if param.grad is None:
            param.grad = grad
        else:
            param.grad += grad
        if self._on_grad is not None:
            self._on_grad(param, param.grad)


def _dependencies(root: Node) -> dict[Node, int]:
    """How many edges lead into each node reachable from `root`."""
    count: dict[Node, int] = {}
    stack = [root]
    seen = {root}
    while stack:
        for target, _ in stack.pop().next_functions:
            if target is None:
                continue
            count[target] = count.get(target, 0) + 1
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return count


def _conform(grad: Tensor, meta) -> Tensor:
    """The engine's validate_outputs: a gradient takes the dtype and shape of the input it flows into."""
    if grad.dtype != meta.dtype:
        grad = grad.to(meta.dtype)
    if grad.shape != meta.shape:
        grad = grad.sum_to_size(meta.shape)
    return grad


def _key(t: Tensor) -> int:
    return storage_key(t)


def _as_tuple(outputs) -> tuple:
    return outputs if isinstance(outputs, tuple) else (outputs,)
