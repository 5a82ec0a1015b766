"""Whether py-spy can attach here: the py-spy tests skip, naming why, where it cannot."""

from __future__ import annotations

import functools
import subprocess
import sys

from detr.errors import DetrError
from detrdoctor.pyspy import dump


@functools.lru_cache(maxsize=1)
def attach_problem() -> str | None:
    """Why py-spy cannot read a child Python process here (missing, ptrace forbidden), or None."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        dump(child.pid, subprocesses=False)
    except DetrError as e:
        return str(e)
    finally:
        child.communicate(b"", timeout=60)
    return None
