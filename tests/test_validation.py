"""Request validation: the real API's limits, answered before a credit is spent."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest
from gateway.validation import (
    TEXT_TO_IMAGE_RULES,
    check_engine_dimensions,
    check_fields,
    check_text_prompts,
)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"cfg_scale": 36}, "bad_request"),
        ({"cfg_scale": -1}, "bad_request"),
        ({"cfg_scale": "7"}, "bad_request"),
        ({"samples": 0}, "invalid_samples"),
        ({"samples": 11}, "invalid_samples"),
        ({"samples": 1.5}, "invalid_samples"),
        ({"seed": 4_294_967_296}, "bad_request"),
        ({"seed": -1}, "bad_request"),
        ({"steps": 51}, "bad_request"),
        ({"width": 1000}, "invalid_height_or_width"),
        ({"height": 64}, "invalid_height_or_width"),
        ({"style_preset": "watercolour"}, "bad_request"),
        ({"sampler": "EULER"}, "bad_request"),
        ({"clip_guidance_preset": "FAST"}, "bad_request"),
        ({"extras": []}, "bad_request"),
        ({"samples": True}, "invalid_samples"),
    ],
)
def test_out_of_range_parameters(params: dict, name: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_fields(params, TEXT_TO_IMAGE_RULES)
    assert caught.value.name == name
    assert next(iter(params)) in caught.value.message


def test_valid_parameters_pass() -> None:
    check_fields(
        {"cfg_scale": 35, "samples": 10, "seed": 4_294_967_295, "steps": 10, "width": 1344,
         "height": 768, "style_preset": "cinematic", "sampler": "K_DPMPP_2M",
         "clip_guidance_preset": "NONE", "extras": {}},
        TEXT_TO_IMAGE_RULES,
    )  # fmt: skip


@pytest.mark.parametrize(
    "prompts",
    [None, [], "a cat", [{"weight": 1}], [{"text": "   "}], [{"text": "x" * 2001}],
     [{"text": "ok", "weight": "heavy"}]],
)  # fmt: skip
def test_bad_prompts(prompts: object) -> None:
    with pytest.raises(BadRequest) as caught:
        check_text_prompts(prompts)
    assert caught.value.name == "invalid_prompts"


def test_sdxl_sizes() -> None:
    check_engine_dimensions("stable-diffusion-xl-1024-v1-0", 1344, 768)
    check_engine_dimensions("stable-diffusion-v1-6", 1920, 1088)  # other engines: no list
    with pytest.raises(BadRequest) as caught:
        check_engine_dimensions("stable-diffusion-xl-1024-v1-0", 1920, 1080)
    assert caught.value.name == "invalid_sdxl_v1_dimensions"
    assert "1344x768" in caught.value.message and "768x1344" in caught.value.message
