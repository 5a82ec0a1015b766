"""Running out of device memory: what the trainer may retry, and the facts of the line that stops a run.

A training step that fails in its first steps is retried at half the images per forward pass, gradient
accumulation keeping the optimizer's batch (so nothing about the optimisation changes); later a failure stops
the run with the checkpoint of the last finished step. Evaluation changes no state, so it is always retried
at half its batch, down to one image.
"""

from __future__ import annotations

import gc
import resource
from collections.abc import Callable
from typing import TypedDict

import torch

OOM_RETRY_STEPS = 10  # steps of a process (from its start or resume) in which a training step is retried
MAX_OOM_RETRIES = 3  # halvings of the training batch per process
OOM_EXIT_CODE = 1

# memprofile's recommended batch size for the run (None: it does not know); detrdoctor provides it.
BatchAdvisor = Callable[[], "int | None"]


class OutOfMemoryStop(Exception):
    """Unwinds the training loop after an out-of-memory error it cannot retry; the message is the one line."""


class OomRetryFields(TypedDict):
    """The fields of an `oom_retry` event, besides the common ones."""

    phase: str  # train | eval
    batch_size: int  # images per forward pass that ran out of memory
    new_batch_size: int  # ... and the retry's
    effective_batch: int  # images per optimizer step (train) or the eval batch (eval)
    accumulation_steps: int
    peak_bytes: int | None
    attempt: int


def free_memory(device: torch.device) -> None:
    """Give back what the failed attempt held: its tensors once unreferenced, then the allocator's cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_memory(device: torch.device) -> tuple[int | None, int | None]:
    """(peak bytes, device total): CUDA's allocated high-water mark and the GPU's memory; on the CPU the
    process's peak resident memory (no total)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device), torch.cuda.get_device_properties(device).total_memory
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, None


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def describe_peak(device: torch.device, peak: int | None, total: int | None) -> str:
    if peak is None:
        return "peak memory unknown"
    if device.type == "cuda":
        return f"peak {gib(peak)} allocated" + (f" of {gib(total)} on {device}" if total else "")
    return f"peak resident memory {gib(peak)} on the CPU"


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or ["out of memory"])[0]
