"""The shared number text: byte sizes at every scale, a report's word for a missing value, finite values."""

from __future__ import annotations

import math

from detrdoctor.fmt import byte_size, finite_floats, number


def test_byte_sizes_keep_two_useful_digits_at_every_scale() -> None:
    assert [byte_size(n) for n in (3 * 2**19, 64 * 2**20, 2**30, 8 * 10**9)] == [
        "1.5 MiB",
        "64 MiB",
        "1.00 GiB",
        "7.45 GiB",
    ]
    assert byte_size(None) == "–" and byte_size(None, missing="n/a") == "n/a"


def test_number_and_finite_floats() -> None:
    assert number(0.12345, ".3f", "?") == "0.123" and number(None, ".3f", "?") == "?"
    assert finite_floats([1, None, math.nan, 2.5, math.inf, "x", True]) == [1.0, 2.5, 1.0]
