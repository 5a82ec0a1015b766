"""Text for numbers in reports and logs, written once: byte sizes, optional numbers, the finite values of a series."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

GIB, MIB = 2**30, 2**20


def byte_size(n: float | None, missing: str = "–") -> str:
    """'7.81 GiB', '512 MiB', '3.5 MiB' (two significant-enough digits at every scale); `missing` for None."""
    if n is None:
        return missing
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.0f} MiB" if n >= 10 * MIB else f"{n / MIB:.1f} MiB"


def number(value: float | None, spec: str, missing: str) -> str:
    """`value` formatted with `spec`, or the report's word for a value it does not have."""
    return missing if value is None else format(value, spec)


def finite_floats(values: Iterable[Any]) -> list[float]:
    """The finite numbers among `values` as floats (None, NaN, infinities and non-numbers dropped)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
