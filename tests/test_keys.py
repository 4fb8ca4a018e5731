"""Canonicalisation: what changes the key and what must not."""

from __future__ import annotations

import json

import pytest

from cache.keys import canonical_json, make_key
from gateway.config import Settings
from gateway.routes.text_to_image import fill_defaults

DEFAULTS = Settings().defaults
ENGINE = "stable-diffusion-xl-1024-v1-0"


def key_of(body: dict) -> str:
    return make_key("v1/text-to-image", ENGINE, fill_defaults(body, ENGINE, DEFAULTS))


BASE = {"text_prompts": [{"text": "a lighthouse", "weight": 1}], "width": 1344, "height": 768}


def test_key_order_and_whitespace_do_not_matter() -> None:
    reordered = json.loads(
        '{ "height": 768,\n "width": 1344, "text_prompts": [{"weight": 1, "text": "a lighthouse"}]}'
    )
    assert key_of(BASE) == key_of(reordered)


@pytest.mark.parametrize("spelling", [7, 7.0, 7e0, 7.000])
def test_number_spelling_does_not_matter(spelling: float) -> None:
    assert key_of({**BASE, "cfg_scale": spelling}) == key_of({**BASE, "cfg_scale": 7})


def test_spelled_out_defaults_equal_omitted_defaults() -> None:
    explicit = {**BASE, "cfg_scale": 7, "steps": 30, "samples": 1, "seed": 0}
    omitted_weight = {**BASE, "text_prompts": [{"text": "a lighthouse"}]}
    assert key_of(explicit) == key_of(BASE) == key_of(omitted_weight)


@pytest.mark.parametrize(
    "change",
    [
        {"cfg_scale": 8},
        {"seed": 42},
        {"width": 768, "height": 1344},
        {"style_preset": "cinematic"},
        {"text_prompts": [{"text": "a lighthouse ", "weight": 1}]},
        {"text_prompts": [{"text": "a lighthouse", "weight": 0.5}]},
        {"extras": {"a": {"b": 1}}},
    ],
)
def test_parameters_change_the_key(change: dict) -> None:
    assert key_of({**BASE, **change}) != key_of(BASE)


def test_prompt_order_changes_the_key() -> None:
    a = {"text": "sea", "weight": 1}
    b = {"text": "blurry", "weight": -1}
    assert key_of({**BASE, "text_prompts": [a, b]}) != key_of({**BASE, "text_prompts": [b, a]})


def test_nested_objects_are_sorted_at_every_depth() -> None:
    assert canonical_json({"b": {"y": 1, "x": [2, {"q": 1.0, "p": 0}]}, "a": True}) == (
        '{"a":true,"b":{"x":[2,{"p":0,"q":1}],"y":1}}'
    )


def test_booleans_are_not_numbers() -> None:
    assert canonical_json({"x": True}) != canonical_json({"x": 1})


def test_route_engine_and_files_are_separate_parts() -> None:
    params = {"p": 1}
    assert make_key("r", "e", params) != make_key("r", "e2", params)
    assert make_key("ab", "c", params) != make_key("a", "bc", params)
    with_file = make_key("r", "e", params, {"init_image": b"abc"})
    assert with_file != make_key("r", "e", params)
    assert with_file != make_key("r", "e", params, {"init_image": b"abd"})
    assert make_key("r", "e", params, {"a": b"1", "b": b"2"}) == make_key(
        "r", "e", params, {"b": b"2", "a": b"1"}
    )


def test_key_is_hex_sha256_and_never_contains_secrets() -> None:
    key = key_of(BASE)
    assert len(key) == 64 and int(key, 16) >= 0
