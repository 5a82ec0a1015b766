"""A model of PyTorch's CUDA caching allocator: what allocated and reserved memory a sequence of
tensor allocations and frees would produce on a GPU, without one.

It follows the allocator's documented defaults (c10/cuda/CUDACachingAllocator.cpp, no PYTORCH_CUDA_ALLOC_CONF):
requests round up to 512-byte blocks; requests up to 1 MiB share 2 MiB segments, larger ones come from
20 MiB segments (under 10 MiB) or segments rounded up to 2 MiB; free blocks are reused best-fit, split when
the remainder is worth keeping and merged with free neighbours; segments are never returned to the device.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MIN_BLOCK = 512
SMALL_SIZE = 1 << 20  # the largest request served from the small pool
SMALL_SEGMENT = 2 << 20
LARGE_SEGMENT = 20 << 20
MIN_LARGE_ALLOC = 10 << 20
ROUND_LARGE = 2 << 20


def round_size(nbytes: int) -> int:
    """The block size a request occupies."""
    return MIN_BLOCK * max(1, -(-nbytes // MIN_BLOCK))


def segment_size(block_size: int) -> int:
    """The size of the segment cudaMalloc'd when no cached block fits."""
    if block_size <= SMALL_SIZE:
        return SMALL_SEGMENT
    if block_size < MIN_LARGE_ALLOC:
        return LARGE_SEGMENT
    return ROUND_LARGE * -(-block_size // ROUND_LARGE)


@dataclass(eq=False)
class Block:
    """A contiguous piece of a segment, either handed out or cached."""

    size: int
    offset: int
    segment: int
    small: bool
    allocated: bool = False
    prev: Block | None = field(default=None, repr=False)
    next: Block | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[int, int, int]:
        return self.size, self.segment, self.offset


class CachingAllocatorModel:
    """Replays malloc/free and keeps the allocator's statistics: allocated and reserved bytes with their peaks."""

    def __init__(self) -> None:
        self._pools: dict[bool, list[tuple[int, int, int]]] = {True: [], False: []}  # small? → sorted free keys
        self._blocks: dict[tuple[int, int, int], Block] = {}
        self._segments = 0
        self.allocated = self.reserved = 0
        self.peak_allocated = self.peak_reserved = 0

    def malloc(self, nbytes: int) -> Block | None:
        """A block for a request of `nbytes`; None for an empty tensor, which takes no device memory."""
        if nbytes <= 0:
            return None
        size = round_size(nbytes)
        small = size <= SMALL_SIZE
        block = self._take_free(size, small) or self._new_segment(size, small)
        remaining = block.size - size
        # A remainder too small to be worth caching stays part of the block and counts as allocated.
        if (remaining >= MIN_BLOCK) if small else (remaining > SMALL_SIZE):
            rest = Block(remaining, block.offset + size, block.segment, small, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next, block.size = rest, size
            self._cache(rest)
        block.allocated = True
        self.allocated += block.size
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block

    def free(self, block: Block | None) -> None:
        """Return a block to its pool, merged with free neighbours in its segment."""
        if block is None:
            return
        block.allocated = False
        self.allocated -= block.size
        for neighbour in (block.prev, block.next):
            if neighbour is not None and not neighbour.allocated:
                self._uncache(neighbour)
                if neighbour is block.prev:
                    neighbour.size += block.size
                    neighbour.next = block.next
                    if block.next is not None:
                        block.next.prev = neighbour
                    block = neighbour
                else:
                    block.size += neighbour.size
                    block.next = neighbour.next
                    if neighbour.next is not None:
                        neighbour.next.prev = block
        self._cache(block)

    def reset_peaks(self) -> None:
        """As torch.cuda.reset_peak_memory_stats: peaks restart from the current values."""
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved

    def _take_free(self, size: int, small: bool) -> Block | None:
        pool = self._pools[small]
        i = bisect.bisect_left(pool, (size, -1, -1))
        if i == len(pool):
            return None
        return self._uncache(self._blocks[pool[i]])

    def _new_segment(self, size: int, small: bool) -> Block:
        nbytes = segment_size(size)
        self._segments += 1
        self.reserved += nbytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return Block(nbytes, 0, self._segments, small)

    def _cache(self, block: Block) -> None:
        bisect.insort(self._pools[block.small], block.key)
        self._blocks[block.key] = block

    def _uncache(self, block: Block) -> Block:
        pool = self._pools[block.small]
        del pool[bisect.bisect_left(pool, block.key)]
        del self._blocks[block.key]
        return block
