"""The multipart rule tables: form coercion, prompts, rules between fields, uploads."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from cache.keys import make_key
from gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from gateway.validation import (
    V1_IMAGE_TO_IMAGE,
    V1_MASKING,
    V1_UPSCALE_ESRGAN,
    V2_CORE,
    V2_EDIT_OUTPAINT,
    V2_SD3,
    V2_ULTRA,
    V2_UPSCALE_FAST,
    FileRule,
    Rule,
    check_form,
    check_upload,
    check_upscale_target,
    coerce_form,
    form_text_prompts,
    parse_number,
    v1_table,
)


def image(width: int, height: int, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, format=fmt)
    return out.getvalue()


PROMPT = {"text_prompts[0][text]": "a lighthouse"}
INIT = {"init_image": image(512, 512)}


def refused(fields: dict, files: dict, table, name: str = "bad_request") -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        check_form(fields, files, table)
    assert caught.value.name == name, caught.value.message
    return caught.value


@pytest.mark.parametrize(
    ("raw", "value"),
    [("7", 7), (" 7 ", 7), ("7.0", 7.0), ("0.35", 0.35), ("-1", -1), ("1e2", 100.0), (".5", 0.5)],
)
def test_parse_number(raw: str, value: float) -> None:
    assert parse_number("x", raw, Rule("number")) == value


@pytest.mark.parametrize("raw", ["", "seven", "1_000", "nan", "inf", "0x10", "1e999", "7,5"])
def test_parse_number_refuses(raw: str) -> None:
    with pytest.raises(BadRequest, match="x: expected a") as caught:
        parse_number("x", raw, Rule("int", error="invalid_samples"))
    assert caught.value.name == "invalid_samples"


def test_coerce_form_parses_only_numeric_rules() -> None:
    rules = {"seed": Rule("int"), "cfg_scale": Rule("number"), "style_preset": Rule("string")}
    fields = {"seed": "42", "cfg_scale": "7.5", "style_preset": "anime", "unknown": "12"}
    assert coerce_form(fields, rules) == {
        "seed": 42,
        "cfg_scale": 7.5,
        "style_preset": "anime",
        "unknown": "12",  # not the table's: kept as sent
    }


def test_form_text_prompts_numbers_and_default_weight() -> None:
    fields = {
        "text_prompts[1][text]": "blurry",
        "text_prompts[0][text]": "a cat",
        "text_prompts[1][weight]": "-1.0",
        "cfg_scale": "7",
    }
    assert form_text_prompts(fields) == {
        "text_prompts[0][text]": "a cat",
        "text_prompts[0][weight]": 1,
        "text_prompts[1][text]": "blurry",
        "text_prompts[1][weight]": -1.0,
    }


@pytest.mark.parametrize(
    "fields",
    [
        {"text_prompts[0][text]": "  "},
        {"text_prompts[0][text]": "x" * 2001},
        {"text_prompts[0][text]": "a", "text_prompts[0][weight]": "heavy"},
        {"text_prompts[0][text]": "a", "text_prompts[2][text]": "gap"},
        {"text_prompts[0][weight]": "1"},
        {"text_prompts[0][txt]": "typo"},
        {"text_prompts": "a cat"},
    ],
)
def test_bad_form_prompts(fields: dict) -> None:
    refused(fields, INIT, V1_IMAGE_TO_IMAGE, "invalid_prompts")


def test_image_to_image_params_defaults_and_uploads() -> None:
    fields = {**PROMPT, "image_strength": "0.35", "cfg_scale": "7.0", "extras": '{"a":1}'}
    checked = check_form(fields, INIT, V1_IMAGE_TO_IMAGE)
    assert checked.params == {
        "text_prompts[0][text]": "a lighthouse",
        "text_prompts[0][weight]": 1,
        "image_strength": 0.35,
        "cfg_scale": 7,
        "extras": '{"a":1}',
        "samples": 1,
        "seed": 0,
        "init_image_mode": "IMAGE_STRENGTH",
    }
    assert checked.image_sizes == {"init_image": (512, 512)}
    assert checked.uploads == INIT


def test_spelled_out_defaults_and_number_spelling_share_a_key() -> None:
    def key(fields: dict) -> str:
        checked = check_form(fields, INIT, V1_IMAGE_TO_IMAGE)
        return make_key("v1/image-to-image", "e", checked.params, checked.uploads)

    plain = key(PROMPT)
    spelled = key(
        {
            "seed": "0",
            **PROMPT,
            "samples": "1.0",
            "text_prompts[0][weight]": "1",
            "init_image_mode": "IMAGE_STRENGTH",
        }
    )
    assert plain == spelled
    assert key({**PROMPT, "seed": "5"}) != plain
    other = check_form(PROMPT, {"init_image": image(512, 512, "JPEG")}, V1_IMAGE_TO_IMAGE)
    assert make_key("v1/image-to-image", "e", other.params, other.uploads) != plain


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"image_strength": "1.5"}, "bad_request"),
        ({"step_schedule_start": "-0.1"}, "bad_request"),
        ({"init_image_mode": "STRENGTH"}, "bad_request"),
        ({"samples": "11"}, "invalid_samples"),
        ({"samples": "two"}, "invalid_samples"),
        ({"sampler": "EULER"}, "bad_request"),
        ({"style_preset": "watercolour"}, "bad_request"),
    ],
)
def test_image_to_image_bad_fields(fields: dict, name: str) -> None:
    error = refused({**PROMPT, **fields}, INIT, V1_IMAGE_TO_IMAGE, name)
    assert next(iter(fields)) in error.message


def test_uploads_missing_unexpected_or_sent_as_text() -> None:
    assert "init_image: required" in refused(PROMPT, {}, V1_IMAGE_TO_IMAGE).message
    error = refused(PROMPT, {**INIT, "mask_image": image(8, 8)}, V1_IMAGE_TO_IMAGE)
    assert "mask_image: unexpected file upload" in error.message
    error = refused({**PROMPT, "init_image": "a path"}, {}, V1_IMAGE_TO_IMAGE)
    assert "expected a file upload" in error.message


def test_empty_extra_part_is_ignored() -> None:
    """Stability's examples send files={"none": ""} to force multipart."""
    checked = check_form({"prompt": "x"}, {"none": b""}, V2_CORE)
    assert checked.uploads == {}


@pytest.mark.parametrize(
    ("data", "rule", "why"),
    [
        (b"not an image", FileRule(), "not a decodable image"),
        (image(64, 64)[:40], FileRule(), "not a decodable image"),
        (b"", FileRule(), "empty"),
        (image(64, 64, "GIF"), FileRule(), "a GIF image"),
        (image(63, 300), FileRule(min_side=64), "too small"),
        (image(1100, 1000), FileRule(max_pixels=1_048_576), "pixels, over"),
        (image(300, 200), FileRule(sizes=((1024, 1024),)), "must be one of: 1024x1024"),
    ],
)
def test_bad_uploads(data: bytes, rule: FileRule, why: str) -> None:
    with pytest.raises(BadRequest, match=why):
        check_upload("image", data, rule)


def test_upload_over_its_byte_limit_is_413() -> None:
    with pytest.raises(PayloadTooLarge, match="over 100"):
        check_upload("image", image(64, 64), FileRule(max_bytes=100))


def test_sdxl_init_image_must_have_an_sdxl_size() -> None:
    table = v1_table("image-to-image", "stable-diffusion-xl-1024-v1-0")
    refused(PROMPT, {"init_image": image(512, 512)}, table, "invalid_sdxl_v1_dimensions")
    check_form(PROMPT, {"init_image": image(1344, 768)}, table)
    check_form(PROMPT, {"init_image": image(300, 200)}, v1_table("image-to-image", "other"))


def test_masking_rules() -> None:
    white = {**PROMPT, "mask_source": "MASK_IMAGE_WHITE"}
    assert "mask_source: required" in refused(PROMPT, INIT, V1_MASKING).message
    assert "mask_image: required when" in refused(white, INIT, V1_MASKING).message
    check_form({**PROMPT, "mask_source": "INIT_IMAGE_ALPHA"}, INIT, V1_MASKING)
    wrong = {**INIT, "mask_image": image(256, 256)}
    assert "must have the same size" in refused(white, wrong, V1_MASKING).message
    check_form(white, {**INIT, "mask_image": image(512, 512)}, V1_MASKING)


def test_upscale_rules_and_target() -> None:
    files = {"image": image(300, 200)}
    assert check_form({"width": "1024"}, files, V1_UPSCALE_ESRGAN).params == {"width": 1024}
    refused({"width": "1024", "height": "1024"}, files, V1_UPSCALE_ESRGAN)
    refused({"width": "256"}, files, V1_UPSCALE_ESRGAN, "invalid_height_or_width")
    assert check_upscale_target((300, 200), None, None) == (600, 400)
    assert check_upscale_target((300, 200), 1200, None) == (1200, 800)
    assert check_upscale_target((300, 200), None, 1000) == (1500, 1000)
    with pytest.raises(BadRequest, match="pixel limit"):
        check_upscale_target((1024, 1024), 4096, None)


def test_v2_defaults_and_ranges() -> None:
    assert check_form({"prompt": "x"}, {}, V2_CORE).params == {
        "prompt": "x",
        "aspect_ratio": "1:1",
        "output_format": "png",
        "seed": 0,
    }
    check_form({"prompt": "x" * 10_000, "seed": "4294967294"}, {}, V2_CORE)
    for fields in (
        {},
        {"prompt": ""},
        {"prompt": "x" * 10_001},
        {"prompt": "x", "seed": "4294967295"},
        {"prompt": "x", "aspect_ratio": "4:3"},
        {"prompt": "x", "output_format": "gif"},
        {"prompt": "x", "style_preset": "watercolour"},
    ):
        refused(fields, {}, V2_CORE)


def test_sd3_rules() -> None:
    refused({"prompt": "x", "output_format": "webp"}, {}, V2_SD3)
    refused({"prompt": "x", "model": "sd4"}, {}, V2_SD3)
    refused({"prompt": "x", "mode": "image-to-image", "strength": "0.5"}, {}, V2_SD3)
    picture = {"image": image(512, 512)}
    error = refused({"prompt": "x", "mode": "image-to-image"}, picture, V2_SD3)
    assert "strength: required when mode is image-to-image" in error.message
    checked = check_form(
        {"prompt": "x", "mode": "image-to-image", "strength": "0.5"}, picture, V2_SD3
    )
    assert "aspect_ratio" not in checked.params  # the image decides the shape
    assert check_form({"prompt": "x", "model": "sd3.5-medium"}, {}, V2_SD3).params["mode"] == (
        "text-to-image"
    )


def test_ultra_and_edit_rules() -> None:
    picture = {"image": image(512, 512)}
    refused({"prompt": "x"}, picture, V2_ULTRA)  # strength goes with an image
    assert (
        "aspect_ratio"
        not in check_form({"prompt": "x", "strength": "0.3"}, picture, V2_ULTRA).params
    )
    refused({}, {"image": image(2000, 1000)}, V2_UPSCALE_FAST)  # over 1 megapixel
    error = refused({"left": "0"}, picture, V2_EDIT_OUTPAINT)
    assert "at least one of left, right, up, down" in error.message
    check_form({"down": "64"}, picture, V2_EDIT_OUTPAINT)
