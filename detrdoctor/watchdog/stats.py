"""Robust statistics over rolling windows of per-step scalars, in plain Python (no torch).

The watchdog judges every step against the recent past: the median and the median absolute deviation
(MAD) ignore the occasional outlier that would drag a mean and a standard deviation along with it.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence

# MAD × 1.4826 estimates the standard deviation of a normal distribution.
MAD_TO_SIGMA = 1.4826


class RollingWindow:
    """The last `size` finite values of a series."""

    def __init__(self, size: int, values: Iterable[float] = ()):
        self.values: deque[float] = deque(values, maxlen=size)

    def __len__(self) -> int:
        return len(self.values)

    def append(self, value: float) -> None:
        """Non-finite values are dropped: one NaN would poison every median after it."""
        if math.isfinite(value):
            self.values.append(value)

    def median(self) -> float:
        return median(self.values)

    def mad(self) -> float:
        """Median absolute deviation from the median."""
        center = self.median()
        return median([abs(v - center) for v in self.values])

    def last(self, n: int) -> list[float]:
        """The newest `n` values (fewer while the window is filling), oldest first."""
        return list(self.values)[-n:]


def median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


def robust_z(value: float, window: RollingWindow, min_sigma: float) -> float:
    """How many robust standard deviations `value` lies above the window's median.

    `min_sigma` floors the spread: in a quiet stretch the MAD shrinks towards zero and the tiniest
    wobble would otherwise score as a huge deviation.
    """
    sigma = max(MAD_TO_SIGMA * window.mad(), min_sigma)
    return (value - window.median()) / sigma


def range_excess(value: float, window: RollingWindow, min_range: float) -> float:
    """How far `value` lies above the window's maximum, in units of the window's range (max − min)."""
    top, bottom = max(window.values), min(window.values)
    return (value - top) / max(top - bottom, min_range)


def slope(values: Sequence[float]) -> float:
    """Theil–Sen slope of `values` against their index: the median of all pairwise slopes.

    Robust like the median: a single jump at the end of the series does not make a trend.
    """
    pairs = [(b - a) / (j - i) for i, a in enumerate(values) for j, b in enumerate(values) if j > i]
    return median(pairs) if pairs else 0.0


def rising_fraction(values: Sequence[float]) -> float:
    """The share of step-to-step changes that go up."""
    if len(values) < 2:
        return 0.0
    return sum(b > a for a, b in zip(values, values[1:])) / (len(values) - 1)


def sustained_growth(log_values: Sequence[float]) -> tuple[float, float]:
    """(growth factor per step, share of rising steps) of a series of logarithms.

    A trend needs both: a steep robust slope, and most steps going up.
    """
    return math.exp(slope(log_values)), rising_fraction(log_values)


def steps_to_limit(log_values: Sequence[float], log_limit: float) -> tuple[float, float]:
    """(growth factor per step, steps until the series reaches `log_limit` at that rate) of a series of logarithms.

    The rate is the median step-to-step change: one wild step (DETR's first) does not make a trend. A series
    that does not grow never gets there (inf).
    """
    rate = median([b - a for a, b in itertools.pairwise(log_values)])
    return math.exp(rate), ((log_limit - log_values[-1]) / rate if rate > 0 else math.inf)
