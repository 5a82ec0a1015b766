"""The largest batch size that fits: doubling from the largest known fit, then bisection."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

LIMIT = 4096  # doubling stops here: no single-device DETR batch comes near it


@dataclass
class Search:
    """The answer (None: not even one image fits) and the batch sizes tried, in order."""

    best: int | None
    trials: list[int] = field(default_factory=list)


def find_max(fits: Callable[[int], bool], known: Mapping[int, bool] | None = None, limit: int = LIMIT) -> Search:
    """Largest b ≤ `limit` with fits(b), assuming fits is monotone (a batch fits if a larger one does).

    `known` results (the sweep's) are reused, never re-tried: the search starts doubling from the
    largest known fit and bisects between it and the smallest known failure above it.
    """
    seen = dict(known or {})
    trials: list[int] = []

    def test(b: int) -> bool:
        if b not in seen:
            trials.append(b)
            seen[b] = fits(b)
        return seen[b]

    lo = max((b for b, ok in seen.items() if ok), default=0)
    hi = min((b for b, ok in seen.items() if not ok and b > lo), default=None)
    while hi is None:
        if lo >= limit:
            return Search(lo, trials)
        b = min(max(2 * lo, 1), limit)
        if test(b):
            lo = b
        else:
            hi = b
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if test(mid):
            lo = mid
        else:
            hi = mid
    return Search(lo or None, trials)
