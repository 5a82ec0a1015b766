"""torchrun integration: one process per device, NCCL on GPUs and gloo on CPUs."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from detr.errors import DetrError

PEER_KEY = "detrdoctor/peer/{}"  # in the process group's store: "host pid" of each rank, to name a lost one


class PeerLost(DetrError):
    """A collective failed: another rank died or stopped answering within [train] dist_timeout_s."""


def launched_by_torchrun() -> bool:
    """torchrun sets these for every process it starts."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def init_distributed(device_type: str, timeout_s: float = 300.0) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun; return (rank, world_size, local_rank).

    A collective waits at most `timeout_s` for its peers; each rank leaves its host and PID in the group's
    store, so that the survivors of a failed collective can name the rank that is gone (see `describe_lost_peers`).
    """
    if not launched_by_torchrun():
        return 0, 1, 0
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        store = dist.distributed_c10d._get_default_store()
        store.set(PEER_KEY.format(rank), f"{socket.gethostname()} {os.getpid()}")
    return rank, world_size, local_rank


def _process_state(pid: int) -> str | None:
    """'gone', 'stopped' or None (running, or not ours to tell) for a process on this host."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
    except (OSError, IndexError):
        return None
    return {"T": "stopped", "t": "stopped", "Z": "gone", "X": "gone"}.get(state)


def describe_lost_peers(rank: int, world_size: int) -> str:
    """Which other ranks are gone or stopped, by the PIDs they left in the store (those on this host); '' when
    none can be told (the store itself went with rank 0, or the peers run elsewhere)."""
    host = socket.gethostname()
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set_timeout(timedelta(seconds=5))
        peers = {r: store.get(PEER_KEY.format(r)).decode().split() for r in range(world_size) if r != rank}
    except Exception:  # noqa: BLE001 - a dead store is itself the finding: nothing more to name
        return ""
    found = []
    for peer, (peer_host, pid) in sorted(peers.items()):
        state = _process_state(int(pid)) if peer_host == host else None
        if state:
            found.append(f"rank {peer} (PID {pid} on {peer_host}) is {state}")
    return ", ".join(found)


COLLECTIVE_FAILURES = ("gloo", "nccl", "connection reset", "connection closed", "timed out", "timeout")


def is_collective_failure(error: RuntimeError) -> bool:
    """A backend's error about its peers (not a bug of this rank, such as a shape mismatch)."""
    return isinstance(error, dist.DistError) or any(m in str(error).lower() for m in COLLECTIVE_FAILURES)


def peer_lost(error: BaseException, rank: int, world_size: int, timeout_s: float, step: int) -> PeerLost:
    """The one line for a failed collective, in place of the backend's traceback."""
    lost = describe_lost_peers(rank, world_size)
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    who = lost or "another rank died or did not answer"
    return PeerLost(
        f"rank {rank} of {world_size}: the collective after step {step} failed: {who} "
        f"(within [train] dist_timeout_s = {timeout_s:g} s; {first[:160]}); the checkpoint of the last "
        "finished epoch or stop is intact: restart all ranks with --resume auto"
    )


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
