"""Per-stage timing inside the DataLoader workers: read, decode, augment and collate, per sample.

The dataset is not edited: a wrapper times `dataset[i]`, and probes on the image decoder and on the
dataset's `transform` mark where reading ends and where augmentation starts. The timings ride
back to the main process inside each sample's target and are summed by the collate wrapper, which
appends them to the batch, so no shared memory or extra queue is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import perf_counter
from typing import Any

STAGES = ("read", "decode", "augment", "collate")
STAGE_KEY = "_loaderbench_stage_s"  # the target entry that carries a sample's timings

# Marks of the sample being loaded in this process (a worker loads one sample at a time).
_marks: dict[str, float] = {}
_probe_installed = False  # inherited by forked workers along with the probe itself


class TimedTransform:
    """Wraps the dataset's `transform`, marking when augmentation starts (it runs to the end of the sample)."""

    def __init__(self, transform: Callable[..., Any]) -> None:
        self.transform = transform

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _marks["augment_start"] = perf_counter()
        return self.transform(*args, **kwargs)


class TimedDecoder:
    """Wraps the image decoder of `detr.data.decode`: the file has been read when it is first called."""

    def __init__(self, decode: Callable[..., Any]) -> None:
        self.decode = decode

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _marks.setdefault("decode_start", perf_counter())  # a replaced corrupt image decodes twice
        return self.decode(*args, **kwargs)


def _install_decoder_probe() -> Callable[[], None] | None:
    """Wrap `detr.data.decode.decode_image` in this process; returns the undo, or None if nothing was done."""
    global _probe_installed
    from detr.data import decode

    current = getattr(decode, "decode_image", None)
    _probe_installed = True  # also when there is no decoder to wrap (PIL only): then read counts as decode
    if current is None or isinstance(current, TimedDecoder):
        return None
    decode.decode_image = TimedDecoder(current)

    def undo() -> None:
        global _probe_installed
        decode.decode_image = current
        _probe_installed = False

    return undo


@contextmanager
def decoder_probe() -> Iterator[None]:
    """The decoder probe in the main process (forked workers inherit it), removed afterwards."""
    undo = _install_decoder_probe()
    try:
        yield
    finally:
        if undo is not None:
            undo()


def split_stages(start: float, end: float, marks: dict[str, float]) -> dict[str, float | None]:
    """Seconds per stage of one sample from its marks; a stage whose marks are missing is None.

    read: start → decoder called; decode: → augmentation starts (includes box cleaning, microseconds);
    augment: the transform plus building the target. Without a decoder mark, read and decode are one
    stage reported as decode.
    """
    decode_start = marks.get("decode_start")
    augment_start = marks.get("augment_start", end)
    return {
        "read": None if decode_start is None else decode_start - start,
        "decode": augment_start - (start if decode_start is None else decode_start),
        "augment": end - augment_start if "augment_start" in marks else None,
    }


class StageTimedDataset:
    """`dataset[i]` with its read, decode and augment time (seconds) added to the target under STAGE_KEY."""

    def __init__(self, dataset: Any) -> None:
        # A shallow copy shares the images, annotations and epoch with the original; only its transform differs.
        self.dataset = copy.copy(dataset)
        transform = getattr(dataset, "transform", None)
        if callable(transform):
            self.dataset.transform = TimedTransform(transform)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, dict]:
        if not _probe_installed:  # a worker started by spawn or forkserver does not inherit the probe
            _install_decoder_probe()
        _marks.clear()
        start = perf_counter()
        image, target = self.dataset[index]
        target[STAGE_KEY] = split_stages(start, perf_counter(), _marks)
        return image, target


class TimedCollate:
    """Wraps a collate function; the batch gains one element: the summed seconds per stage and `samples`."""

    def __init__(self, collate: Callable[[list[Any]], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list[tuple[Any, dict]]) -> tuple[Any, ...]:  # the DataLoader passes a list
        totals: dict[str, float | None] = {"read": 0.0, "decode": 0.0, "augment": 0.0}
        for _, target in samples:
            for stage, seconds in target.pop(STAGE_KEY).items():
                totals[stage] = None if seconds is None or totals[stage] is None else totals[stage] + seconds
        start = perf_counter()
        batch = self.collate(samples)
        totals["collate"] = perf_counter() - start
        totals["samples"] = len(samples)
        return (*batch, totals)
