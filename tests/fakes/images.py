"""Image helpers for tests: deterministic images of an exact size, and decoding shortcuts.

The fake Stability server and the end-to-end tests both need images whose size is known and
whose pixels differ from call to call, so that a test can tell "served from cache" from
"fetched again" by comparing bytes or pixels.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib

from PIL import Image

# Masking noise to 6 bits per channel keeps it incompressible-ish while landing a 1344x768 PNG
# at ~2.6 MB (full 8-bit noise gives ~3.1 MB), the size range the benchmarks are built around.
_SIX_BITS = bytes(i & 0x3F for i in range(256))

# Pillow's names for the output formats the Stability API speaks.
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}


@functools.lru_cache(maxsize=32)
def image_bytes(
    width: int, height: int, *, fmt: str = "png", seed: int = 0, noisy: bool = False
) -> bytes:
    """Encode a width x height RGB image in `fmt` (png, jpeg or webp).

    The default is a solid colour derived from `seed`: cheap (a few KB, ~10 ms at 1024x1024).
    `noisy=True` fills it with seeded random pixels so that it is large and does not compress,
    which is what benchmarks need to measure real byte-moving costs; that takes ~0.1 s to build,
    hence the cache (bounded, because noisy images are megabytes each).
    """
    rng = random.Random(seed)
    if noisy:
        pixels = rng.randbytes(width * height * 3).translate(_SIX_BITS)
        image = Image.frombytes("RGB", (width, height), pixels)
    else:
        red, green, blue = rng.randbytes(3)
        image = Image.new("RGB", (width, height), (red, green, blue))
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_FORMATS[fmt.lower()])
    return buffer.getvalue()


def with_text_chunk(png: bytes, text: str) -> bytes:
    """The PNG with a tEXt chunk (keyword "Comment") added after its IHDR: the same pixels
    in bytes (and a SHA-256) of their own, for the cost of a copy instead of an encode."""
    body = b"Comment\0" + text.encode("latin-1")
    chunk = struct.pack(">I", len(body)) + b"tEXt" + body
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + body))
    after_header = 8 + 12 + struct.unpack_from(">I", png, 8)[0]
    return png[:after_header] + chunk + png[after_header:]


def png_bytes(width: int, height: int, *, seed: int = 0, noisy: bool = False) -> bytes:
    """A valid PNG of exactly width x height; see `image_bytes` for what seed and noisy do."""
    return image_bytes(width, height, fmt="png", seed=seed, noisy=noisy)


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes fully, so that a corrupt image fails here and not on first pixel use."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of encoded image bytes; the check most end-to-end tests make."""
    return open_image(data).size
