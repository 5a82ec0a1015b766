"""The training batches of a run: DETR's `for samples, targets in data_loader`, resumable and stoppable.

`TrainBatches.epoch(n)` yields the batches of epoch n from where a resume starts, and records before each fetch
the position a checkpoint taken during that wait must name: (epoch, batch in epoch, RNG state), the state after
the last finished step. Each fetch runs in a helper thread while the loop waits for it, so a stop asked for during
a long wait (a preemption signal, Ctrl-C, a stall detector's request) ends the wait at once, even when the loader
is blocked in the kernel (a read from a hung file system without workers): nothing has to be raised into the main
thread. The helper only runs while the loop waits, so random numbers are drawn in the same order as without it.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch

from detr.engine.checkpointing import rng_state
from detr.engine.loaders import batch_sampler
from detr.torch_private import shutdown_loader_workers

Batch = tuple[torch.Tensor, torch.Tensor, list[dict[str, Any]]]
Position = tuple[int, int, dict[str, Any]]  # (epoch, batch in epoch, RNG state) a resume starts from
POLL_S = 0.1  # how often a wait for data looks at the stop request


class Fetcher:
    """Runs `next(iterator)` in a helper thread while the caller waits; the caller can give up waiting.

    A fetch that was given up on still runs to its end (or forever, blocked in the kernel): its thread is a
    daemon, and the next fetch gets a new thread and new queues so that no late result is taken for its own.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[Iterator[Batch]]
        self._results: queue.SimpleQueue[tuple[Batch | None, BaseException | None]]
        self._thread: threading.Thread | None
        self._abandon()

    def fetch(self, iterator: Iterator[Batch], should_stop: Callable[[], bool]) -> Batch | None:
        """The next batch, None at the end of the iterator; raises StopWaiting when `should_stop()` became
        true before the batch came, and the loader's error as the loader raised it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="detr-batch-fetch", daemon=True)
            self._thread.start()
        self._requests.put(iterator)
        while True:
            try:
                batch, error = self._results.get(timeout=POLL_S)
            except queue.Empty:
                if should_stop():
                    self._abandon()
                    raise StopWaiting from None
                continue
            except BaseException:  # a second Ctrl-C while waiting
                self._abandon()
                raise
            if error is not None:
                raise error
            return batch

    def _abandon(self) -> None:
        """Leave the helper to the fetch it is in; it may still deliver, never into the next fetch's queue."""
        self._requests, self._results, self._thread = queue.SimpleQueue(), queue.SimpleQueue(), None

    def _serve(self) -> None:
        requests, results = self._requests, self._results
        while True:
            iterator = requests.get()
            try:
                results.put((next(iterator, None), None))
            except BaseException as error:  # handed to the waiting loop, which raises it there
                results.put((None, error))


class StopWaiting(Exception):
    """A stop was asked for while the loop waited for a batch."""


class TrainBatches:
    """The batches of each epoch, from the resume position; `position` is what a checkpoint during the wait for
    the next batch (or of a step that fails before it finishes) must resume from."""

    def __init__(self, loader: torch.utils.data.DataLoader, start_epoch: int, start_batch: int) -> None:
        self.loader, self.start_epoch, self.start_batch = loader, start_epoch, start_batch
        self.position: Position = (start_epoch, start_batch, {})
        self.stopped_waiting = False  # the last epoch() ended because a stop was asked for during a wait
        self._fetcher = Fetcher()

    def epoch(self, epoch: int, should_stop: Callable[[], bool]) -> Iterator[Batch]:
        """Epoch `epoch`'s batches. When `should_stop()` turns true during a wait (or a second Ctrl-C
        arrives), the epoch ends early with `stopped_waiting` set; `position` then names the batch waited for."""
        start = self.start_batch if epoch == self.start_epoch else 0
        batch_sampler(self.loader).set_epoch(epoch, start_batch=start)
        self.stopped_waiting = False
        iterator = iter(self.loader)  # here, in the main thread: workers start and install their signal handling
        for batch_in_epoch in itertools.count(start):
            self.position = (epoch, batch_in_epoch, rng_state())
            try:
                batch = self._fetcher.fetch(iterator, should_stop)
            except (StopWaiting, KeyboardInterrupt):
                self.stopped_waiting = True
                shutdown_loader_workers(iterator)  # the abandoned fetch keeps the iterator
                return
            if batch is None:
                return
            yield batch
