"""Training checkpoints: the official layout plus what an exact resume needs, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from detr.errors import CheckpointError, ConfigError


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (see write_atomic)."""
    write_atomic(path, lambda f: torch.save(obj, f))


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], shared: bool = False) -> None:
    """Let `write` fill a temporary file in the same folder, fsync, then rename it over `path`.

    A kill at any moment leaves either the previous file or the new one, never a torn mix; a failed write leaves
    no temporary file. The file is private (mkstemp's 0600) unless `shared`: then it gets the permissions the
    umask gives new files, as a file to hand on (an exported model) should.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if shared:
            os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by the trainer (or the official code) for `--resume`; never runs pickled code."""
    from detr.checkpoint import load_checkpoint_file

    ckpt = load_checkpoint_file(path)
    if "model" not in ckpt:
        raise CheckpointError(
            f"{path}: not a training checkpoint (no 'model' entry); use --weights to load bare weights"
        )
    return ckpt


def resume_epoch(ckpt: dict[str, Any]) -> int:
    """The epoch a resumed run continues in: ours record the epoch in progress (beside `global_step`),
    the official ones the last finished epoch."""
    return ckpt["epoch"] if "global_step" in ckpt else ckpt.get("epoch", -1) + 1


def check_resume_not_finished(ckpt: dict[str, Any], epochs: int, max_steps: int, source: str | Path) -> None:
    """A ConfigError when resuming `ckpt` would train nothing: its run already reached `epochs` (or `max_steps`).

    Without it such a resume "finishes" at once and looks like a run that trained (Deformable-DETR#161).
    """
    finished = resume_epoch(ckpt)
    if finished >= epochs:
        raise ConfigError(
            f"--resume {source}: the run already finished {finished} "
            f"epoch{'s' if finished != 1 else ''} (--epochs {epochs}); "
            "pass a larger --epochs to continue"
        )
    steps = ckpt.get("global_step", 0)
    if max_steps and steps >= max_steps:
        raise ConfigError(
            f"--resume {source}: the run already made {steps} step{'s' if steps != 1 else ''} "
            f"(--max-steps {max_steps}); pass a larger --max-steps (0: no limit) to continue"
        )
