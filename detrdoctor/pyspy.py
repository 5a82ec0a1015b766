"""py-spy for detrdoctor: stack dumps of a process and its DataLoader workers, flame graphs, and the fix
when the kernel does not let py-spy attach.

py-spy reads another process's memory through ptrace; it needs the same user plus, depending on the
machine, root, CAP_SYS_PTRACE (Docker: `--cap-add SYS_PTRACE`) or a permissive Yama ptrace_scope.
"""

from __future__ import annotations

import ctypes
import importlib.metadata as metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from detr.errors import DetrError

YAMA_SCOPE = Path("/proc/sys/kernel/yama/ptrace_scope")
PR_SET_PTRACER = 0x59616D61  # prctl option of Yama: let a named process (and its descendants) trace us
NOT_PERMITTED = re.compile(
    r"permission denied|operation not permitted|os error (1|13)\)|elevated permissions", re.IGNORECASE
)
NATIVE_UNSUPPORTED = re.compile(r"native.*not supported|not supported.*native", re.IGNORECASE)
# `func (file.py:12)` is a Python frame; `func (libc.so.6)` or `func (selectmodule.c:655)` a native one.
FRAME_LINE = re.compile(r"^\s+(?P<function>.+?) \((?P<location>[^()]*)\)$")
PYTHON_FILE = re.compile(r"^(?P<file>.+?\.pyx?|<[^>]+>):(?P<line>\d+)$")
THREAD_LINE = re.compile(r'^Thread (?P<tid>\S+) \((?P<state>[^)]*)\)(?:: "(?P<name>.*)")?')
PROCESS_LINE = re.compile(r"^Process (?P<pid>\d+): (?P<cmdline>.*)")
WAITING_FOR_BATCH = "DataLoaderIter"  # the trainer's wait point while its DataLoader workers owe a batch
IDLE_WORKER = "_worker_loop"  # a DataLoader worker waiting for indices
SEPARATOR = "\n" + "-" * 80 + "\n"  # between processes, as py-spy itself writes it


class PySpyUnavailable(DetrError):
    """py-spy is not installed, or the kernel does not let it attach; the message names the fix."""


def find_pyspy() -> str | None:
    """The py-spy binary: on PATH, next to this interpreter (a virtualenv that is not activated), or where
    its wheel's metadata put it."""
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).with_name("py-spy")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    try:
        dist = metadata.distribution("py-spy")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if f.name in ("py-spy", "py-spy.exe"):
            path = Path(str(dist.locate_file(f))).resolve()
            if path.is_file():
                return str(path)
    return None


def ptrace_scope() -> int | None:
    """Yama's kernel.yama.ptrace_scope (0 classic, 1 descendants only, 2 admin only, 3 none); None without Yama."""
    try:
        return int(YAMA_SCOPE.read_text().strip())
    except (OSError, ValueError):
        return None


def ptrace_fix(scope: int | None = None) -> str:
    """How to let py-spy attach on this machine."""
    scope = ptrace_scope() if scope is None else scope
    if scope == 3:
        return (
            "kernel.yama.ptrace_scope is 3 (ptrace disabled until reboot): set it to 0 at boot "
            "(kernel.yama.ptrace_scope=0 in /etc/sysctl.d/) and reboot"
        )
    return (
        "run as root (sudo), in Docker add `--cap-add SYS_PTRACE` to `docker run`, "
        "or allow ptrace for your user with `sudo sysctl kernel.yama.ptrace_scope=0`"
    )


def allow_descendants_to_trace() -> None:
    """Under ptrace_scope=1 a child may not trace its parent: declare this process's own descendants
    (the py-spy children started here) as allowed tracers. DataLoader workers are siblings of py-spy,
    so dumping them still needs one of the fixes in `ptrace_fix()`."""
    if ptrace_scope() != 1 or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PTRACER, os.getpid(), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # best effort: py-spy then reports the permission error, which names the fix


_explained: set[str] = set()


def explain_once(key: str, message: str) -> str | None:
    """`message` the first time `key` is seen in this process, else None: say each fix once per run."""
    if key in _explained:
        return None
    _explained.add(key)
    return message


def _pyspy() -> str:
    binary = find_pyspy()
    if binary is None:
        raise PySpyUnavailable("py-spy is not installed: `pip install py-spy` (it ships as a binary wheel)")
    return binary


def _failure(pid: int, stderr: str) -> DetrError:
    first = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "py-spy failed")
    if NOT_PERMITTED.search(stderr):
        return PySpyUnavailable(
            f"py-spy cannot attach to process {pid} (ptrace not permitted: {first}); to allow it, {ptrace_fix()}"
        )
    return DetrError(f"py-spy could not read process {pid}: {first}")


def dump(pid: int, subprocesses: bool = True, native: bool = False, timeout_s: float = 120.0) -> str:
    """`py-spy dump` of `pid` (and its descendants) as text; Python frames only where native unwinding
    is unsupported or fails."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise DetrError(f"no process with pid {pid}") from None
    except PermissionError:
        raise PySpyUnavailable(f"process {pid} belongs to another user; {ptrace_fix()}") from None
    if not (subprocesses and pid in _ancestry()):
        return _dump_one(pid, subprocesses, native, timeout_s)
    # `py-spy --subprocesses` on an ancestor of itself (a process dumping itself) meets its own
    # non-Python process among the children and fails: list the descendants first and dump each.
    texts = [_dump_one(pid, False, native, timeout_s)]
    for child in _descendants(pid):
        try:
            texts.append(_dump_one(child, False, native, timeout_s))
        except DetrError as e:  # a child that exited meanwhile, or one that is not Python
            texts.append(f"Process {child}: not dumped ({e})\n")
    return SEPARATOR.join(texts)


def _dump_one(pid: int, subprocesses: bool, native: bool, timeout_s: float) -> str:
    command = [_pyspy(), "dump", "--pid", str(pid)] + ["--subprocesses"] * subprocesses
    try:
        result = subprocess.run(command + ["--native"] * native, capture_output=True, text=True, timeout=timeout_s)
        if result.returncode != 0 and native and not NOT_PERMITTED.search(result.stderr):
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DetrError(f"py-spy did not finish reading process {pid} within {timeout_s:.0f} s") from None
    if result.returncode != 0:
        raise _failure(pid, result.stderr)
    return result.stdout


def _parents() -> dict[int, int]:
    """pid → parent pid of every process in /proc (empty where there is no /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if entry.name.isdigit():
            try:
                # The command name in parentheses may contain anything: the fields after its last `)`.
                parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    return parents


def _ancestry() -> set[int]:
    """This process and its ancestors."""
    parents, chain, pid = _parents(), set(), os.getpid()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        pid = parents.get(pid, 0)
    return chain


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, ()))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, ()))
    return sorted(found)


# ----------------------------------------------------------------------------- reading a dump


@dataclass(frozen=True)
class Frame:
    function: str
    location: str  # file:line for Python frames, the library for native ones
    python: bool

    def __str__(self) -> str:
        return f"{self.function} ({self.location})"


@dataclass
class ThreadStack:
    pid: int
    thread: str  # the thread's name, or its id when py-spy shows no name
    state: str  # idle | active | active+gil ...
    frames: list[Frame] = field(default_factory=list)  # innermost first

    def wait_point(self) -> Frame | None:
        """The innermost Python frame outside the standard library: where this thread's own code waits."""
        python = [f for f in self.frames if f.python]
        return next((f for f in python if not _is_stdlib(f.location)), python[0] if python else None)


def _is_stdlib(location: str) -> bool:
    file = PYTHON_FILE.match(location)
    name = file.group("file") if file else location
    if name.startswith("<frozen"):
        return True
    top = name.split("/", 1)[0].removesuffix(".py")
    return top in sys.stdlib_module_names


def parse_dump(text: str) -> list[ThreadStack]:
    """Every thread of every process in a `py-spy dump` text, frames innermost first."""
    threads: list[ThreadStack] = []
    pid = 0
    for raw in text.splitlines():
        if m := PROCESS_LINE.match(raw):
            pid = int(m.group("pid"))
        elif m := THREAD_LINE.match(raw):
            threads.append(ThreadStack(pid=pid, thread=m.group("name") or m.group("tid"), state=m.group("state")))
        elif threads and (m := FRAME_LINE.match(raw)):
            location = m.group("location")
            threads[-1].frames.append(Frame(m.group("function"), location, bool(PYTHON_FILE.match(location))))
    return threads


def wait_points(threads: list[ThreadStack], root_pid: int) -> list[dict[str, Any]]:
    """Where each process's main thread waits, the root process first (the event's `frames` field)."""
    main = [(t, point) for t in threads if t.thread == "MainThread" and (point := t.wait_point()) is not None]
    main.sort(key=lambda pair: pair[0].pid != root_pid)
    return [
        {
            "pid": t.pid,
            "thread": t.thread,
            "state": t.state,
            "frame": str(point),
            "function": point.function,
        }
        for t, point in main
    ]


def describe_wait(points: list[dict[str, Any]], root_pid: int) -> str:
    """`pid 12 in g (y.py:9); trainer in f (x.py:3)`: the likely culprit first.

    A trainer waiting for a batch points at its DataLoader workers, so they come first then; workers
    idle in their loop (waiting for work, not blocking anyone) are left out, and identical frames merged.
    """
    root = [p for p in points if p["pid"] == root_pid]
    children = [p for p in points if p["pid"] != root_pid and not p["function"].endswith(IDLE_WORKER)]
    waits_on_workers = any(WAITING_FOR_BATCH in p["function"] for p in root)
    merged: dict[str, list[int]] = {}
    for p in children:
        merged.setdefault(p["frame"], []).append(p["pid"])
    parts = [
        f"{'pid' if len(pids) == 1 else 'pids'} {', '.join(map(str, pids))} in {frame}"
        for frame, pids in merged.items()
    ]
    trainer = [f"trainer in {p['frame']}" for p in root]
    return "; ".join(parts + trainer if waits_on_workers else trainer + parts)


# ----------------------------------------------------------------------------- flame graphs


class FlameRecorder:
    """An SVG flame graph and a speedscope profile of the same window, from two `py-spy record` processes.

    py-spy writes one format per run. Both recorders sample at half of py-spy's default rate, so the
    target sees the usual 100 samples/s, and both are non-blocking: two samplers that each pause the
    target would contend for ptrace and lose samples, and not pausing keeps the training step unperturbed.
    They run in their own session so a Ctrl-C in the terminal does not cut the window short.
    """

    FORMATS = {"flamegraph": ".svg", "speedscope": ".speedscope.json"}

    def __init__(self, pid: int, stem: str | Path, rate: int = 50, subprocesses: bool = True):
        self.pid = pid
        self.paths = {fmt: Path(f"{stem}{suffix}") for fmt, suffix in self.FORMATS.items()}
        self.rate = rate
        self.subprocesses = subprocesses
        self._procs: dict[str, tuple[subprocess.Popen, IO[bytes]]] = {}

    def start(self) -> None:
        binary = _pyspy()
        for fmt, path in self.paths.items():
            log = tempfile.TemporaryFile()
            command = [
                binary,
                "record",
                "--pid",
                str(self.pid),
                "--format",
                fmt,
                "--output",
                str(path),
                "--rate",
                str(self.rate),
                "--nonblocking",
            ] + ["--subprocesses"] * self.subprocesses
            self._procs[fmt] = (subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True), log)

    def failure(self) -> DetrError | None:
        """Why a recorder exited with an error (it could not attach), or None."""
        for proc, log in self._procs.values():
            if proc.poll() not in (None, 0) and not log.closed:
                log.seek(0)
                return _failure(self.pid, log.read().decode(errors="replace"))
        return None

    def stop(self) -> None:
        """Ask the recorders to finish; they write their files on SIGINT."""
        for proc, _ in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

    def done(self) -> bool:
        return all(proc.poll() is not None for proc, _ in self._procs.values())

    def wait(self, timeout_s: float = 60.0) -> tuple[list[Path], DetrError | None]:
        """Wait for the recorders to exit: the files written, and the first recorder's error if any."""
        for proc, _ in self._procs.values():
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        error = self.failure()
        for _, log in self._procs.values():
            log.close()
        return [p for p in self.paths.values() if p.is_file() and p.stat().st_size > 0], error
