"""torchrun integration: one process per device, NCCL on GPUs and gloo on CPUs."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def launched_by_torchrun() -> bool:
    """torchrun sets these for every process it starts."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device_type: str) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun; return (rank, world_size, local_rank)."""
    if not launched_by_torchrun():
        return 0, 1, 0
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return rank, world_size, local_rank


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def agree_on_stop(code: int, device: torch.device) -> int:
    """The largest of every rank's stop code (0: go on; a signal number: stop), the same on every rank, so all
    ranks stop after the same step even when only one of them received the signal."""
    if not dist.is_initialized():
        return code
    t = torch.tensor([code], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank raised the flag (so all ranks stop at the same step)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
