"""Where commands write: every output file resolves inside its output folder, and a failed write is one line.

User files are sacred: a name taken from a dataset (an absolute `file_name`, `../x.jpg`) must not reach outside
the folder a command writes to, and a full disk or a read-only folder must say which path and what to do.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath

from detr.errors import DetrError


class OutputError(DetrError):
    """A file a command writes cannot be written (disk full, read-only, a folder in the way) or would land
    outside its output folder."""


def resolve_inside(folder: str | Path, name: str | PurePath) -> Path:
    """`folder / name`, kept inside `folder`: an absolute `name` loses its root, `..` and `.` parts are dropped,
    the other sub-folders are kept. A symbolic link inside `folder` that leads out is an OutputError."""
    folder = Path(folder)
    path = PurePath(name)
    parts = [part for part in path.parts if part not in ("..", ".", path.anchor)]
    if not parts:
        raise OutputError(f"{str(name)!r}: not a file name to write under {folder}")
    target = folder.joinpath(*parts)
    if not target.resolve().is_relative_to(folder.resolve()):
        raise OutputError(
            f"{target}: leads outside {folder} through a symbolic link; remove the link or choose another folder"
        )
    return target


ADVICE = {
    errno.ENOSPC: "free disk space (or write elsewhere) and run again",
    errno.EDQUOT: "free space within your disk quota (or write elsewhere) and run again",
    errno.EFBIG: "the file-size limit (ulimit -f) or the file system's is reached; raise it or write elsewhere",
    errno.EROFS: "the file system is read-only; choose a writable output folder",
    errno.EACCES: "no permission to write there; choose a folder you can write to",
    errno.EPERM: "no permission to write there; choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another output path",
    errno.EISDIR: "a folder is in the way of the file; move it away or choose another output folder",
    errno.EEXIST: "a file is in the way of the folder; move it away or choose another output path",
}


def write_error(path: str | Path, error: OSError, note: str = "") -> OutputError:
    """One line for a failed write: the path, the system's reason and what to do (then `note`, if any)."""
    where = error.filename if error.filename else path
    reason = error.strerror or str(error)
    advice = ADVICE.get(error.errno or 0, "check the path and run again")
    return OutputError(f"cannot write {where}: {reason}; {advice}" + (f"; {note}" if note else ""))


@contextmanager
def writing(path: str | Path, note: str = "") -> Iterator[None]:
    """Turn an OSError raised while writing `path` into the one-line `write_error`."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e, note) from None


def make_folder(folder: str | Path, note: str = "") -> Path:
    """`folder` created with its parents, or the one-line `write_error` when that is impossible."""
    folder = Path(folder)
    with writing(folder, note):
        folder.mkdir(parents=True, exist_ok=True)
    return folder
