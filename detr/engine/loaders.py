"""DataLoaders whose batches depend only on (seed, epoch, position): any num_workers, exact resume."""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING, cast

import torch
from torch.utils.data import DataLoader

from detr.config import DataConfig

if TYPE_CHECKING:
    from detr.data import CocoDetection, DeterministicBatchSampler


def ignore_sigint_in_worker(worker_id: int) -> None:  # noqa: ARG001 - DataLoader's signature
    """Ctrl-C reaches the whole process group; only the trainer should react, at a step boundary."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(
    dataset: CocoDetection,
    data_cfg: DataConfig,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A loader over our deterministic batch sampler (shuffled and drop_last for training)."""
    from detr.data import DeterministicBatchSampler, collate_batch

    group_ids = None
    if train and data_cfg.aspect_ratio_grouping:
        group_ids = [0 if r < 1 else 1 for r in dataset.aspect_ratios()]
    sampler = DeterministicBatchSampler(
        len(dataset),
        batch_size,
        shuffle=train,
        seed=seed,
        rank=rank,
        world_size=world_size,
        drop_last=train,
        group_ids=group_ids,
    )
    workers = data_cfg.num_workers if num_workers is None else num_workers
    pin = data_cfg.pin_memory and device is not None and device.type == "cuda" if pin_memory is None else pin_memory
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_batch,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=ignore_sigint_in_worker if workers > 0 else None,
        # A private generator: creating the iterator must not draw from the global RNG (exact resume).
        generator=torch.Generator().manual_seed(seed),
    )


def build_eval_loader(
    dataset: CocoDetection,
    data_cfg: DataConfig,
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
) -> DataLoader:
    """Every validation image once, split over ranks, in dataset order."""
    loader = build_loader(
        dataset, data_cfg, batch_size, train=False, seed=0, rank=rank, world_size=world_size, device=device
    )
    batch_sampler(loader).set_epoch(0)
    return loader


def batch_sampler(loader: DataLoader) -> DeterministicBatchSampler:
    """The batch sampler of a `build_loader` loader (DataLoader types it as any iterable of batches)."""
    return cast("DeterministicBatchSampler", loader.batch_sampler)
