"""Offline placeholder images: the requested size, Stability's format, no network, no credit.

Deterministic for a given cache key, so offline runs are reproducible and tests can compare
bytes. The image says plainly that it is a placeholder and shows the prompt.
"""

from __future__ import annotations

import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont


def placeholder_image(
    width: int, height: int, *, key: str, lines: list[str], image_format: str = "PNG"
) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    background = (64 + digest[0] // 2, 64 + digest[1] // 2, 64 + digest[2] // 2)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    size = max(12, min(width, height) // 24)
    font = ImageFont.load_default(size=size)
    chars = max(10, int(width / (size * 0.6)) - 4)
    text_lines = ["OFFLINE PLACEHOLDER", f"{width}x{height}"]
    for line in lines:
        text_lines.extend(textwrap.wrap(line, chars)[:6])
    y = size
    for line in text_lines:
        if y + size > height:
            break
        draw.text((size, y), line, fill=(255, 255, 255), font=font)
        y += int(size * 1.4)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(255, 255, 255), width=2)
    out = io.BytesIO()
    image.save(out, format=image_format)
    return out.getvalue()
