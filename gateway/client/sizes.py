"""Which size to ask SDXL 1.0 for, given the size the video needs.

SDXL 1.0 makes only nine sizes (about one megapixel each); anything else is refused with
400 `invalid_sdxl_v1_dimensions` (by the gateway before a credit is spent). A 1920x1080
frame therefore comes from 1344x768, the allowed size nearest 16:9, scaled up afterwards.
"""

from __future__ import annotations

import math

# Kept in step with gateway.validation.SDXL_V1_SIZES by a test; not imported from there so
# that the client does not depend on the gateway's internals.
SDXL_V1_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024),
    (1152, 896),
    (1216, 832),
    (1344, 768),
    (1536, 640),
    (640, 1536),
    (768, 1344),
    (832, 1216),
    (896, 1152),
)


def nearest_sdxl_size(width: int, height: int) -> tuple[int, int]:
    """The SDXL 1.0 size whose aspect ratio is closest to width:height.

    Closeness is measured on the log of the ratio, so 2:1 and 1:2 are equally far from
    square; ties go to the larger image.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive, got {width}x{height}")
    target = math.log(width / height)
    return min(SDXL_V1_SIZES, key=lambda s: (abs(math.log(s[0] / s[1]) - target), -s[0] * s[1]))


def parse_size(text: str) -> tuple[int, int]:
    """`"1920x1080"` -> (1920, 1080); ValueError for anything else."""
    parts = text.lower().replace("\N{MULTIPLICATION SIGN}", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected WIDTHxHEIGHT, e.g. 1920x1080; got {text!r}")
    width, height = (int(p) for p in parts)
    if not (0 < width <= 8192 and 0 < height <= 8192):
        raise ValueError(f"width and height must be between 1 and 8192; got {text!r}")
    return width, height
