"""File reads with a time limit, so a hung network mount (or a named pipe) names its file instead of hanging."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

READ_TIMEOUT_S = 5.0  # one header read: a local disk answers in milliseconds, a slow mount in a second or two


class TimedOut(Generic[T]):
    """The item whose read did not return within the limit (the reads after it are not tried)."""

    def __init__(self, item: T, seconds: float) -> None:
        self.item, self.seconds = item, seconds


def read_each(
    items: Sequence[T], read: Callable[[T], R], timeout_s: float = READ_TIMEOUT_S
) -> Iterator[tuple[T, R | BaseException | TimedOut[T]]]:
    """(item, `read(item)` or the exception it raised) in order, read in a daemon thread; the first read
    that takes longer than `timeout_s` yields TimedOut and ends the iteration (its thread is abandoned:
    a blocked open cannot be interrupted, and a daemon thread does not keep the process alive)."""
    results: queue.Queue[tuple[int, R | BaseException]] = queue.Queue()
    stop = threading.Event()

    def worker() -> None:
        for k, item in enumerate(items):
            if stop.is_set():
                return
            try:
                results.put((k, read(item)))
            except Exception as e:  # noqa: BLE001 - handed to the caller, who decides
                results.put((k, e))

    threading.Thread(target=worker, name="bounded-read", daemon=True).start()
    for item in items:
        try:
            _, result = results.get(timeout=timeout_s)
        except queue.Empty:
            stop.set()
            yield item, TimedOut(item, timeout_s)
            return
        yield item, result
