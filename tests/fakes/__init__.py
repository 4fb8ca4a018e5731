"""Test doubles for end-to-end tests: a fake Stability API, image helpers, a gateway runner."""

from typing import TYPE_CHECKING

from tests.fakes.gateway_process import GatewayProcess, GatewayStartError, gateway_env, start_on
from tests.fakes.images import image_bytes, image_size, open_image, png_bytes
from tests.fakes.multipart import encode_multipart

# The fake Stability server is imported on first use rather than here: importing it from
# the package would make `python -m tests.fakes.stability` warn that the module was
# already imported before it ran.
_STABILITY_NAMES = frozenset(
    {
        "V2_ASPECT_SIZES", "Call", "FakeStability", "accepted", "corrupt_pixels", "error", "hang",
        "invalid_base64", "key_hash", "not_an_image", "ok", "reply", "reset_mid_body",
        "status_body", "truncated_json", "wrong_size",
    }
)  # fmt: skip


if TYPE_CHECKING:
    from tests.fakes.stability import (
        V2_ASPECT_SIZES,
        Call,
        FakeStability,
        accepted,
        corrupt_pixels,
        error,
        hang,
        invalid_base64,
        key_hash,
        not_an_image,
        ok,
        reply,
        reset_mid_body,
        status_body,
        truncated_json,
        wrong_size,
    )


def __getattr__(name: str) -> object:
    if name in _STABILITY_NAMES:
        from tests.fakes import stability

        return getattr(stability, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "V2_ASPECT_SIZES",
    "Call",
    "FakeStability",
    "GatewayProcess",
    "GatewayStartError",
    "accepted",
    "corrupt_pixels",
    "encode_multipart",
    "error",
    "gateway_env",
    "hang",
    "image_bytes",
    "image_size",
    "invalid_base64",
    "key_hash",
    "not_an_image",
    "ok",
    "open_image",
    "png_bytes",
    "reply",
    "reset_mid_body",
    "start_on",
    "status_body",
    "truncated_json",
    "wrong_size",
]
