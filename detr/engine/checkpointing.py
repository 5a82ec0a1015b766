"""Training checkpoints: the official layout plus what an exact resume needs, written atomically."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import torch

from detr.errors import CheckpointError, ConfigError

CHECKPOINT = "checkpoint.pth"  # the trainer's resume point in a run folder (`--resume auto`, `--resume RUN_DIR`)
BEST = "best.pth"  # the weights of the best evaluation (`evaluate`/`predict --weights RUN_DIR` take it)
TEMPORARY_PATTERN = ".*.pth.*.tmp"  # what `save_atomic` writes before its rename: `.checkpoint.pth.x1y2.tmp`


class _RecordingWriter(io.RawIOBase):
    """A file wrapper that keeps the OSError of a failed write: torch.save reports it as a bare RuntimeError
    ("unexpected pos ..."), which would hide a full disk behind an internal message."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.file.flush()


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (see write_atomic); a failed write raises the system's OSError."""

    def write(f: BinaryIO) -> None:
        writer = _RecordingWriter(f)
        try:
            torch.save(obj, cast(BinaryIO, writer))  # it only calls write and flush
        except RuntimeError:
            if writer.error is not None:
                raise writer.error from None
            raise

    write_atomic(path, write)


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], shared: bool = False) -> None:
    """Let `write` fill a temporary file in the same folder, fsync, then rename it over `path`.

    A kill at any moment leaves either the previous file or the new one, never a torn mix; a failed write (disk
    full, read-only folder) leaves no temporary file and raises the system's OSError. The file is private
    (mkstemp's 0600) unless `shared`: then it gets the permissions the umask gives new files, as a file to hand
    on (an exported model) should.
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


def remove_temporary_files(folder: str | Path) -> tuple[int, int]:
    """Delete the temporary files an interrupted `save_atomic` left in `folder` (a kill -9 mid-write);
    returns (files, bytes) removed. Only call it while holding the folder's run lock: a running writer's
    temporary file looks the same."""
    files = size = 0
    for tmp in Path(folder).glob(TEMPORARY_PATTERN):
        if tmp.is_file():
            size += tmp.stat().st_size
            tmp.unlink()
            files += 1
    return files, size


def resolve_resume(resume: str, output_dir: str) -> tuple[str, str]:
    """(checkpoint to resume or "", run folder or "") for `--resume` CKPT, RUN_DIR or `auto` (with `output_dir`).

    A run folder resumes from its `checkpoint.pth` and starts fresh in that folder when there is none yet, so
    a requeued job runs the same command line from its first start to its last. A checkpoint file continues
    in its own folder unless `output_dir` names another.
    """
    if not resume:
        return "", output_dir
    if resume == "auto":
        if not output_dir:
            raise ConfigError("--resume auto continues the run in --output-dir: give --output-dir DIR")
        run_dir = Path(output_dir)
    elif Path(resume).expanduser().is_dir():
        run_dir = Path(resume).expanduser()
        if output_dir and Path(output_dir).resolve() != run_dir.resolve():
            raise ConfigError(f"--resume {resume} and --output-dir {output_dir} name two run folders; give one")
    else:
        return resume, output_dir or str(Path(resume).expanduser().parent)
    checkpoint = run_dir / CHECKPOINT
    return (str(checkpoint) if checkpoint.is_file() else ""), str(run_dir)


def run_folder_weights(path: str | Path) -> Path:
    """The weights a run folder stands for: its best.pth (the best evaluation), else its checkpoint.pth.

    A path that is not a folder is returned as it is."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    for name in (BEST, CHECKPOINT):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path}: a folder without {BEST} or {CHECKPOINT} (give a run folder or a checkpoint file)")


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
