"""Image checks: a corrupt or partial upstream image is refused before it is cached."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from gateway.errors import UpstreamError
from gateway.images import check_image
from tests.fakes.images import png_bytes

GOOD = png_bytes(1344, 768, noisy=True)


def test_good_png_passes() -> None:
    assert check_image(GOOD, expected_size=(1344, 768)) == (1344, 768)


@pytest.mark.parametrize(
    "bad",
    [
        GOOD[: len(GOOD) // 2],  # cut in the middle of the pixel data
        GOOD[:-20],  # the end chunk missing
        GOOD[:100_000] + bytes([GOOD[100_000] ^ 1]) + GOOD[100_001:],  # one bit flipped
        b"this is not a png",
        b"",
    ],
    ids=["half", "no-end", "bit-flip", "text", "empty"],
)
def test_corrupt_pngs_are_refused(bad: bytes) -> None:
    with pytest.raises(UpstreamError):
        check_image(bad, expected_size=(1344, 768))


def test_wrong_size_wrong_format_and_too_big_are_refused() -> None:
    with pytest.raises(UpstreamError, match="expected 1024x1024"):
        check_image(GOOD, expected_size=(1024, 1024))
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64)).save(jpeg, format="JPEG")
    with pytest.raises(UpstreamError, match="JPEG"):
        check_image(jpeg.getvalue(), expected_size=None)
    assert check_image(jpeg.getvalue(), expected_size=(64, 64), formats=("JPEG",)) == (64, 64)
    with pytest.raises(UpstreamError, match="limit"):
        check_image(GOOD, expected_size=None, max_bytes=1000)
