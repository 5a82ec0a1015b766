"""The pixel limit is read from the header, before any decoding: a decompression bomb is named, never decoded."""

from __future__ import annotations

import time

import pytest
from exports import bomb_png

from detr.data.decode import OversizedImageError, header_size, read_rgb


def test_a_bomb_is_refused_from_its_header_in_milliseconds(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1_000_000
    started = time.perf_counter()
    large = bomb_png(tmp_path / "large.png", side=11000)  # over the default, under PIL's own refusal
    with pytest.raises(OversizedImageError, match=r"large\.png: 11000×11000 = 121,000,000 pixels"):
        read_rgb(large)
    with pytest.raises(OversizedImageError, match=r"bomb\.png: 900,000,000 pixels, more than .* 89,478,485"):
        read_rgb(bomb)  # the default, PIL's threshold: past twice it PIL tells the pixel count only
    assert time.perf_counter() - started < 5  # decoding would allocate 2.7 GB and take far longer


def test_the_limit_is_configurable_and_zero_turns_it_off(tmp_path):
    from PIL import Image

    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    assert header_size(small) == (40, 30)
    with pytest.raises(OversizedImageError, match="1,200 pixels, more than .* 1,000"):
        read_rgb(small, max_pixels=1000)
    assert read_rgb(small, max_pixels=0).shape == (3, 30, 40)
    assert read_rgb(small, max_pixels=1200).shape == (3, 30, 40)
