"""Checks on image bytes before they are cached or served."""

from __future__ import annotations

import io

from PIL import Image

from gateway.errors import UpstreamError

MAX_IMAGE_BYTES = 10 * 1024 * 1024


def check_image(
    data: bytes,
    *,
    expected_size: tuple[int, int] | None,
    formats: tuple[str, ...] = ("PNG",),
    max_bytes: int = MAX_IMAGE_BYTES,
) -> tuple[int, int]:
    """Decode fully with Pillow and compare with what was asked for; returns (width, height).

    A full decode (not just `verify()`) catches truncated pixel data, which a header check
    would let through into the cache.
    """
    if len(data) > max_bytes:
        raise UpstreamError(f"upstream image is {len(data)} bytes, over the {max_bytes} limit")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            image.load()
            size = image.size
    except Exception as exc:  # Pillow raises many types for bad data
        raise UpstreamError(f"upstream sent bytes that are not a readable image ({exc})") from exc
    if image_format not in formats:
        raise UpstreamError(f"upstream sent a {image_format} image, expected {'/'.join(formats)}")
    if expected_size is not None and size != expected_size:
        raise UpstreamError(
            f"upstream sent a {size[0]}x{size[1]} image, "
            f"expected {expected_size[0]}x{expected_size[1]}"
        )
    return size
