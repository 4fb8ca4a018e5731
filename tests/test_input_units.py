"""Unit tests for the input and image checks of issue 8 (items 6, 8, 12, 13, 23): the pure
functions behind test_input_hardening.py and test_e2e_input.py."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from gateway.config import V1_ENGINES, ConfigError, Settings, load_settings
from gateway.errors import BadRequest, UpstreamError
from gateway.images import check_decodes, check_image
from gateway.routes.common import MAX_JSON_DEPTH, json_depth
from gateway.routes.stable_image import (
    UPSCALE_4K_SIDE,
    V2_ROUTES,
    check_upscaled,
    expected_size,
    output_size,
)
from gateway.validation import Rule, parse_number
from tests.fakes.images import png_bytes
from tests.fakes.stability import undecodable_png

GOOD = png_bytes(320, 192, noisy=True)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height)).save(out, format="PNG")
    return out.getvalue()


# --- 12 ----------------------------------------------------------------------------------


def test_valid_crcs_over_broken_pixels_pass_verify_but_not_check_decodes() -> None:
    broken = undecodable_png(GOOD)
    assert check_image(broken, expected_size=(320, 192)) == (320, 192)  # CRCs only: passes
    check_decodes(GOOD)
    with pytest.raises(UpstreamError, match=r"does not decode \(image 2:"):
        check_decodes(GOOD, broken)


# --- 6, 8 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["\u0667", "\uff17", "1\u0660", "\u0661.5", "\xa07", "7\u2003"])
def test_numbers_take_ascii_digits_and_blanks_only(raw: str) -> None:
    with pytest.raises(BadRequest):
        parse_number("x", raw, Rule("number"))


@pytest.mark.parametrize(
    ("value", "depth"),
    [(1, 0), ([], 1), ({"a": [1, {"b": []}]}, 4), ([[[[[]]]]] * 3, 5)],
)
def test_json_depth(value: object, depth: int) -> None:
    assert json_depth(value) == depth


def test_json_depth_walks_without_recursion() -> None:
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep) > MAX_JSON_DEPTH


# --- 13 ----------------------------------------------------------------------------------

ROUTES = {route.path.rsplit("/", 2)[-2] + "/" + route.path.rsplit("/", 1)[1]: route
          for route in V2_ROUTES}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "params", "exact"),
    [
        ("edit/erase", {}, (100, 80)),
        ("edit/inpaint", {}, (100, 80)),
        ("edit/search-and-replace", {}, (100, 80)),
        ("edit/remove-background", {}, (100, 80)),
        ("edit/outpaint", {"left": 10, "right": 5, "up": 1, "down": 2}, (115, 83)),
        ("upscale/fast", {}, (400, 320)),
        ("upscale/conservative", {}, None),
        ("upscale/creative", {}, None),
        ("generate/core", {}, None),
    ],
)
def test_every_route_knows_its_output_size(
    name: str, params: dict[str, int], exact: tuple[int, int] | None
) -> None:
    assert expected_size(ROUTES[name], params, (100, 80)) == exact


def test_4k_upscales_draw_placeholders_at_4k_with_the_input_aspect() -> None:
    for name in ("upscale/conservative", "upscale/creative"):
        (size, ratio) = output_size(ROUTES[name], {}, {"image": (100, 80)})
        assert (size, ratio) == ((UPSCALE_4K_SIDE, round(UPSCALE_4K_SIDE * 0.8)), None)


@pytest.mark.parametrize("answer", [(64, 64), (99, 80), (400, 400), (4096, 2000)])
def test_a_4k_upscale_must_keep_the_aspect_and_not_shrink(answer: tuple[int, int]) -> None:
    with pytest.raises(UpstreamError, match="upscale of a 100x80"):
        check_upscaled(png(*answer), (100, 80))


@pytest.mark.parametrize("answer", [(100, 80), (4096, 3277), (1000, 790)])
def test_a_4k_upscale_of_the_right_shape_passes(answer: tuple[int, int]) -> None:
    check_upscaled(png(*answer), (100, 80))


# --- 23 ----------------------------------------------------------------------------------


def test_engines_default_to_stabilitys_v1_engines_and_can_be_set(tmp_path: Path) -> None:
    assert Settings().gateway.engines == V1_ENGINES
    assert "stable-diffusion-xl-1024-v1-0" in V1_ENGINES
    path = tmp_path / "c.toml"
    path.write_text('[gateway]\nengines = ["a-engine", "b-engine"]\n')
    assert load_settings(path, environ={}).gateway.engines == ("a-engine", "b-engine")
    env = {"STABILITY_GATEWAY_ENGINES": " x-engine , y-engine,"}
    assert load_settings(path, environ=env).gateway.engines == ("x-engine", "y-engine")


def test_engines_must_be_strings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[gateway]\nengines = [1, 2]\n")
    with pytest.raises(ConfigError, match="engines"):
        load_settings(path, environ={})
