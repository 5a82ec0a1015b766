"""A run folder belongs to one run: an exclusive lock on `train.lock` while a run writes there.

The lock is an flock on the file, so the kernel releases it when its holder dies, however it dies; the file
also names the holder (PID, host), for the one line a second run prints. A clean end empties the file, so a
file that still names someone when the lock is free was left by a run that died: it is taken over, and said so.
On a file system without flock (some network mounts) the PID decides: a live one on this host, or any on
another host, keeps the folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from detr.errors import ConfigError

LOCK_NAME = "train.lock"
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class RunFolderBusy(ConfigError):
    """Another run holds the folder (exit 2, like any other refused command line)."""


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str

    def describe(self) -> str:
        return f"PID {self.pid} on {self.host}"


def _read_holder(fd: int) -> LockHolder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        data = json.loads(text) if text else None
        return LockHolder(int(data["pid"]), str(data["host"])) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class RunLock:
    """`acquire()` takes the folder or raises RunFolderBusy naming the holder; `release()` gives it back."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> LockHolder | None:
        """Take the lock; returns the holder of a stale lock that was taken over (None when the folder was free)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            previous = self._lock(fd)
            me = LockHolder(os.getpid(), socket.gethostname())
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps({"pid": me.pid, "host": me.host, "since": time.time()}).encode() + b"\n")
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return previous if previous != me else None

    def _lock(self, fd: int) -> LockHolder | None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._refuse(_read_holder(fd))
        except OSError as e:
            if e.errno not in NO_FLOCK:
                raise
            holder = _read_holder(fd)
            if holder is not None and (holder.host != socket.gethostname() or _alive(holder.pid)):
                self._refuse(holder, without_flock=True)
            return holder
        return _read_holder(fd)

    def _refuse(self, holder: LockHolder | None, without_flock: bool = False) -> None:
        who = holder.describe() if holder else "another process"
        folder = self.path.parent
        stale = f"; if that run is gone, delete {self.path}" if without_flock else ""
        raise RunFolderBusy(
            f"{folder} is in use by another run ({who}); wait for it to end, stop it, or choose another "
            f"--output-dir{stale}"
        )

    def release(self) -> None:
        """Empty the file (a clean end, not a stale lock) and unlock it."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a full or read-only disk: the lock still goes when the file closes
        os.close(self._fd)
        self._fd = None
