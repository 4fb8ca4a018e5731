"""Small deterministic images for in-process tests."""

from __future__ import annotations

import base64
import io

from PIL import Image


def image(width: int, height: int, fmt: str = "PNG", colour: int = 0) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (colour, 2, 3)).save(out, format=fmt)
    return out.getvalue()


def png(width: int, height: int, colour: int = 10) -> bytes:
    return image(width, height, "PNG", colour)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as opened:
        return opened.size


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
