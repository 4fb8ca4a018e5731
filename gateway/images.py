"""Checks on image bytes before they are cached or served."""

from __future__ import annotations

import io
import logging

from PIL import Image

from gateway.errors import UpstreamError
from gateway.png import SIGNATURE, BadPng, check_pixels

log = logging.getLogger("gateway.images")

MAX_IMAGE_BYTES = 10 * 1024 * 1024


def check_image(
    data: bytes,
    *,
    expected_size: tuple[int, int] | None,
    formats: tuple[str, ...] = ("PNG",),
    max_bytes: int = MAX_IMAGE_BYTES,
    full: bool = False,
) -> tuple[int, int]:
    """Check an image and compare it with what was asked for; returns (width, height).

    PNG: `verify()` walks every chunk and checks its CRC-32, so a truncated or corrupted
    transfer is refused; with `full`, every pixel row is checked too (gateway.png: the
    pixel data inflates whole and every row is sound), which is what decoding it would
    find. Other formats have no such checksums and are decoded in full with Pillow.
    """
    if len(data) > max_bytes:
        raise UpstreamError(f"upstream image is {len(data)} bytes, over the {max_bytes} limit")
    if full and "PNG" in formats and data[:8] == SIGNATURE:
        try:
            size = check_pixels(data)
        except BadPng as exc:
            raise UpstreamError(f"upstream sent a PNG that does not decode ({exc})") from exc
        if size is not None:
            _check_size(size, expected_size)
            return size
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            size = image.size
            if image_format == "PNG":
                image.verify()
            else:
                image.load()
    except Exception as exc:  # Pillow raises many types for bad data
        raise UpstreamError(f"upstream sent bytes that are not a readable image ({exc})") from exc
    if image_format not in formats:
        raise UpstreamError(f"upstream sent a {image_format} image, expected {'/'.join(formats)}")
    if full and image_format == "PNG":  # a kind gateway.png leaves to Pillow
        check_decodes(data)
    _check_size(size, expected_size)
    return size


def _check_size(size: tuple[int, int], expected: tuple[int, int] | None) -> None:
    if expected is not None and size != expected:
        raise UpstreamError(
            f"upstream sent a {size[0]}x{size[1]} image, expected {expected[0]}x{expected[1]}"
        )


def check_decodes(*images: bytes) -> None:
    """Decode every image in full (Pillow `load()`), for use before an answer is stored.

    `check_image` verifies a PNG's chunk CRCs only, which an upstream can satisfy with pixel
    data that is not a valid zlib stream: such an image would be cached, and served forever,
    although nothing can open it. Decoding costs about 20 times the CRC walk (14 ms for a
    2.6 MB 1344x768 PNG), so it runs only where an answer is about to be kept; an image that
    does not decode is not a usable answer at all, hence UpstreamError (502), not a pass.
    Call it after `check_image` (which bounds the size and the pixel count's source).
    """
    for index, data in enumerate(images):
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
        except Exception as exc:  # Pillow raises many types for bad data
            log.error("not caching an upstream image that does not decode (%s)", exc)
            raise UpstreamError(
                f"upstream sent an image that does not decode (image {index + 1}: {exc})"
            ) from exc
