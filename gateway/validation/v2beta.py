"""Stability's v2beta Stable Image routes as data: one FormTable per route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.validation.rules import ONE_SAMPLE, FileRule, FormTable, Rule, When
from gateway.validation.v1 import STYLE_PRESETS

MAX_V2_SEED = 4_294_967_294
MAX_V2_PROMPT_CHARS = 10_000

# Output size of the v2beta generate routes for each aspect ratio (used for placeholders;
# the upstream's answers are checked against the ratio, not these exact pixels).
V2_ASPECT_SIZES: Mapping[str, tuple[int, int]] = {
    "1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "21:9": (1536, 640),
    "9:21": (640, 1536), "2:3": (832, 1248), "3:2": (1216, 832), "4:5": (896, 1120),
    "5:4": (1120, 896),
}  # fmt: skip
V2_OUTPUT_FORMATS = ("png", "jpeg", "webp")
SD3_OUTPUT_FORMATS = ("png", "jpeg")
SD3_MODELS = (
    "sd3-large", "sd3-large-turbo", "sd3-medium", "sd3.5-large", "sd3.5-large-turbo",
    "sd3.5-medium",
)  # fmt: skip
SD3_MODES = ("text-to-image", "image-to-image")
# output_format -> Pillow's name for it
PIL_FORMATS: Mapping[str, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

# v2beta Stable Image ----------------------------------------------------------------------

_PROMPT = Rule("string", max_length=MAX_V2_PROMPT_CHARS, required=True)
_OPTIONAL_PROMPT = Rule("string", max_length=MAX_V2_PROMPT_CHARS)
_SEED = Rule("int", 0, MAX_V2_SEED)
_FORMAT = Rule("string", choices=V2_OUTPUT_FORMATS)
_STYLE = Rule("string", choices=STYLE_PRESETS)
_ASPECT = Rule("string", choices=tuple(V2_ASPECT_SIZES))
_INPUT_IMAGE = FileRule(required=True, min_side=64)
_GENERATE_DEFAULTS: Mapping[str, Any] = {"aspect_ratio": "1:1", "output_format": "png", "seed": 0}
_EDIT_DEFAULTS: Mapping[str, Any] = {"output_format": "png", "seed": 0}
_V2_SAMPLES: Mapping[str, Rule] = {"samples": ONE_SAMPLE}

V2_CORE = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "aspect_ratio": _ASPECT,
        "seed": _SEED,
        "style_preset": _STYLE,
        "output_format": _FORMAT,
    },
    defaults=_GENERATE_DEFAULTS,
)
V2_ULTRA = FormTable(
    fields={**V2_CORE.fields, "strength": Rule("number", 0, 1)},
    files={"image": FileRule(min_side=64)},
    defaults=_GENERATE_DEFAULTS,
    when=(When("aspect_ratio", "no_default", "image"), When("strength", "required", "image")),
)
V2_SD3 = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _PROMPT,
        "mode": Rule("string", choices=SD3_MODES),
        "strength": Rule("number", 0, 1),
        "aspect_ratio": _ASPECT,
        "model": Rule("string", choices=SD3_MODELS),
        "seed": _SEED,
        "output_format": Rule("string", choices=SD3_OUTPUT_FORMATS),
        "negative_prompt": _OPTIONAL_PROMPT,
        "cfg_scale": Rule("number", 1, 10),
        "style_preset": _STYLE,
    },
    files={"image": FileRule(min_side=64)},
    defaults={"mode": "text-to-image", **_GENERATE_DEFAULTS},
    when=(
        When("image", "required", "mode", ("image-to-image",)),
        When("strength", "required", "mode", ("image-to-image",)),
        When("aspect_ratio", "no_default", "mode", ("image-to-image",)),
        When("aspect_ratio", "no_default", "image"),
    ),
)
V2_UPSCALE_FAST = FormTable(
    fields={**_V2_SAMPLES, "output_format": _FORMAT},
    files={"image": FileRule(required=True, min_side=32, max_pixels=1_048_576)},
    defaults={"output_format": "png"},
)
V2_UPSCALE_CONSERVATIVE = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "seed": _SEED,
        "creativity": Rule("number", 0.2, 0.5),
        "output_format": _FORMAT,
    },
    files={"image": _INPUT_IMAGE},
    defaults=_EDIT_DEFAULTS,
)
V2_UPSCALE_CREATIVE = FormTable(
    fields={
        **V2_UPSCALE_CONSERVATIVE.fields,
        "creativity": Rule("number", 0, 0.35),
        "style_preset": _STYLE,
    },
    files={"image": FileRule(required=True, min_side=64, max_pixels=1_048_576)},
    defaults=_EDIT_DEFAULTS,
)
V2_EDIT_ERASE = FormTable(
    fields={
        **_V2_SAMPLES,
        "grow_mask": Rule("number", 0, 20),
        "seed": _SEED,
        "output_format": _FORMAT,
    },
    files={"image": _INPUT_IMAGE, "mask": FileRule()},
    defaults=_EDIT_DEFAULTS,
)
V2_EDIT_INPAINT = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "grow_mask": Rule("number", 0, 100),
        "seed": _SEED,
        "output_format": _FORMAT,
        "style_preset": _STYLE,
    },
    files={"image": _INPUT_IMAGE, "mask": FileRule()},
    defaults=_EDIT_DEFAULTS,
)
V2_EDIT_OUTPAINT = FormTable(
    fields={
        **_V2_SAMPLES,
        **{side: Rule("int", 0, 2000) for side in ("left", "right", "up", "down")},
        "prompt": _OPTIONAL_PROMPT,
        "creativity": Rule("number", 0, 1),
        "seed": _SEED,
        "output_format": _FORMAT,
        "style_preset": _STYLE,
    },
    files={"image": _INPUT_IMAGE},
    defaults=_EDIT_DEFAULTS,
    any_of=("left", "right", "up", "down"),
)
V2_EDIT_SEARCH_AND_REPLACE = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _PROMPT,
        "search_prompt": _PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "grow_mask": Rule("number", 0, 20),
        "seed": _SEED,
        "output_format": _FORMAT,
        "style_preset": _STYLE,
    },
    files={"image": _INPUT_IMAGE},
    defaults=_EDIT_DEFAULTS,
)
V2_EDIT_REMOVE_BACKGROUND = FormTable(
    fields={**_V2_SAMPLES, "output_format": Rule("string", choices=("png", "webp"))},
    files={"image": _INPUT_IMAGE},
    defaults={"output_format": "png"},
)
