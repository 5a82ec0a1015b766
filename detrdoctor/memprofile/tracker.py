"""Accounting of tensor memory by watching every operator: the bytes alive, their peak, and at the peak
how they split into categories (parameters, gradients, ...) and module groups (backbone, encoder, ...).

Works on real tensors and on fake ones alike: a storage is counted from the operator that creates it
until Python's weak reference to it reports it freed.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from detr.torch_private import TorchDispatchMode, storage_key, tree_leaves
from detrdoctor.memprofile.allocator import Block, CachingAllocatorModel

# Queries that create no storage; fake tensors answer `.device` through the dispatcher, thousands of times.
_METADATA_OPS = {torch.ops.prim.device.default}

CATEGORIES = ("parameters", "gradients", "optimizer_state", "inputs", "activations", "temporaries")
# What the storages a training step's phases create are (see detr.engine.step's `Phase`).
PHASE_CATEGORY = {
    "forward": "activations",
    "backward": "temporaries",
    "clip": "temporaries",
    "optimizer": "optimizer_state",
}


@dataclass
class _Live:
    size: int
    block: Block | None
    category: str
    group: str


class MemoryAccount:
    """The bookkeeping: storages counted, by category and module group, the running total and its peak.

    New storages take the current category and group (see `scope`). With an allocator model, sizes are
    those of the CUDA caching allocator's blocks (so the peak compares with torch.cuda.max_memory_allocated)
    and the model's segments give reserved memory.
    """

    def __init__(self, allocator: CachingAllocatorModel | None = None):
        self.allocator = allocator
        self.category, self.group = "temporaries", "other"
        self._live: dict[int, _Live] = {}
        self._totals: Counter[tuple[str, str]] = Counter()
        self.current = self.peak = 0
        self.peak_totals: dict[tuple[str, str], int] = {}

    def track_outputs(self, func, out) -> None:
        """Count the new storages among an operator's outputs."""
        if func in _METADATA_OPS:
            return
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)

    def track(self, tensor: torch.Tensor, category: str | None = None, group: str | None = None) -> None:
        """Count `tensor`'s storage if it is new (views and in-place results share a counted one)."""
        storage = tensor.untyped_storage()
        key = storage_key(tensor)
        if key in self._live:
            return
        block = self.allocator.malloc(storage.nbytes()) if self.allocator is not None else None
        live = _Live(block.size if block else storage.nbytes(), block, category or self.category, group or self.group)
        self._live[key] = live
        weakref.finalize(storage, self._release, key, self._live).atexit = False
        self._add(live, live.size)

    def retag(self, tensor: torch.Tensor, category: str, group: str) -> None:
        """Move a counted storage to another category and group (a gradient that became a parameter's .grad)."""
        live = self._live.get(storage_key(tensor))
        if live is None:
            self.track(tensor, category, group)
            return
        self._add(live, -live.size)
        live.category, live.group = category, group
        self._add(live, live.size)

    @contextmanager
    def scope(self, category: str | None = None, group: str | None = None) -> Iterator[None]:
        """New storages inside take this category and/or group."""
        saved = self.category, self.group
        self.category, self.group = category or self.category, group or self.group
        try:
            yield
        finally:
            self.category, self.group = saved

    def reset_peak(self) -> None:
        """The peak restarts from what is alive now (torch.cuda.reset_peak_memory_stats)."""
        self.peak, self.peak_totals = self.current, dict(self._totals)
        if self.allocator is not None:
            self.allocator.reset_peaks()

    def breakdown(self) -> dict[str, dict[str, int]]:
        """At the peak: category → module group → bytes (zero entries left out)."""
        result: dict[str, dict[str, int]] = {c: {} for c in CATEGORIES}
        for (category, group), size in sorted(self.peak_totals.items()):
            if size:
                result.setdefault(category, {})[group] = size
        return result

    def _release(self, key: int, ledger: dict[int, _Live]) -> None:
        if ledger is not self._live:
            return  # counted by an earlier account kept by this object (re-initialised since)
        live = ledger.pop(key)
        if self.allocator is not None:
            self.allocator.free(live.block)
        self._add(live, -live.size)

    def _add(self, live: _Live, size: int) -> None:
        self._totals[live.category, live.group] += size
        self.current += size
        if self.current > self.peak:
            self.peak, self.peak_totals = self.current, dict(self._totals)


class MemoryTracker(MemoryAccount, TorchDispatchMode):
    """A MemoryAccount of real tensors: every operator run while the mode is active is counted."""

    def __init__(self, allocator: CachingAllocatorModel | None = None):
        MemoryAccount.__init__(self, allocator)
        TorchDispatchMode.__init__(self)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.track_outputs(func, out)
        return out
