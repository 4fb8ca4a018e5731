"""Test doubles for end-to-end tests: a fake Stability API, image helpers, a gateway runner."""

from tests.fakes.gateway_process import GatewayProcess, GatewayStartError, gateway_env
from tests.fakes.images import image_bytes, image_size, open_image, png_bytes
from tests.fakes.multipart import encode_multipart
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
    reset_mid_body,
    status_body,
    truncated_json,
    wrong_size,
)

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
    "reset_mid_body",
    "status_body",
    "truncated_json",
    "wrong_size",
]
