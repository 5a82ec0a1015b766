"""Batches that depend only on (seed, epoch): reproducible for any num_workers and resumable mid-epoch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def aspect_ratio_group_ids(aspect_ratios: Sequence[float]) -> list[int]:
    """Group 0: portrait (width/height < 1), group 1: landscape or square, as torchvision's references."""
    return [0 if r < 1 else 1 for r in aspect_ratios]


class DeterministicBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices, shuffled per epoch from (seed, epoch), optionally one aspect group each.

    The epoch's batches are formed over the whole dataset and then dealt to ranks (batch k to rank
    k mod world_size), so every rank gets the same number of batches and disjoint samples; with
    drop_last the tail that does not divide evenly is dropped, otherwise it is padded by repeating
    the first batches (like DistributedSampler). `set_epoch(e, start_batch=k)` yields exactly the
    batches from the k-th on that an uninterrupted epoch e would yield on this rank.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        group_ids: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if group_ids is not None and len(group_ids) != num_samples:
            raise ValueError(f"{len(group_ids)} group ids for {num_samples} samples")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.group_ids = None if group_ids is None else np.asarray(group_ids)
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; start_batch > 0 skips the batches a resumed run already trained on."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} is not in [0, {self.batches_per_epoch}]")
        self.epoch, self.start_batch = epoch, start_batch

    def _global_batch_count(self) -> int:
        counts = [self.num_samples] if self.group_ids is None else np.bincount(self.group_ids).tolist()
        full = sum(c // self.batch_size for c in counts)
        return full if self.drop_last else full + sum(1 for c in counts if c % self.batch_size)

    @property
    def batches_per_epoch(self) -> int:
        """Batches this rank gets in a whole epoch (len() counts only those left after start_batch)."""
        total = self._global_batch_count()
        return total // self.world_size if self.drop_last else -(-total // self.world_size)

    def _global_batches(self) -> list[list[int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        if self.group_ids is None:
            batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
            return batches[:-1] if batches and self.drop_last and len(batches[-1]) < self.batch_size else batches
        batches = []
        pending: dict[int, list[int]] = {}
        for index in order.tolist():
            bucket = pending.setdefault(int(self.group_ids[index]), [])
            bucket.append(index)
            if len(bucket) == self.batch_size:
                batches.append(bucket.copy())
                bucket.clear()
        if not self.drop_last:
            batches.extend(bucket for _, bucket in sorted(pending.items()) if bucket)
        return batches

    def rank_batches(self) -> list[list[int]]:
        """All of this rank's batches of the current epoch, ignoring start_batch."""
        batches = self._global_batches()
        if self.world_size > 1 and batches:
            if self.drop_last:
                batches = batches[: len(batches) // self.world_size * self.world_size]
            else:
                pad = -len(batches) % self.world_size
                batches = batches + (batches * (pad // len(batches) + 1))[:pad]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.rank_batches()[self.start_batch :]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch
