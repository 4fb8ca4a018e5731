"""Stability's v2beta Stable Image routes as data: one FormTable per route."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.validation.rules import ONE_SAMPLE, FileRule, FormTable, OneOf, Rule, When
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

# Control and the last edit routes. Fields, ranges and defaults as Stability's v2beta API
# reference documents them (platform.stability.ai/docs/api-reference, tags Control and
# Edit), read from the schemas Comfy Router publishes for them, which mirror Stability's
# form fields (docs.comfy.org/router-schemas/stability/control-sketch.json, -structure,
# -style, -style-transfer, edit-search-and-recolor, edit-replace-background-and-relight):
#   control/sketch, control/structure: image, prompt (required); control_strength 0-1
#     (default 0.7), negative_prompt, seed, output_format, style_preset
#   control/style: image, prompt (required); negative_prompt, aspect_ratio (default 1:1;
#     the answer is about one megapixel of that ratio), fidelity 0-1 (default 0.5), seed,
#     output_format, style_preset
#   control/style-transfer: init_image, style_image (required); prompt, negative_prompt,
#     style_strength 0-1 (default 1), composition_fidelity 0-1 (default 0.9),
#     change_strength 0.1-1 (default 0.9), seed, output_format
#   edit/search-and-recolor: image, prompt, select_prompt (required); negative_prompt,
#     grow_mask 0-20 (default 3), seed, output_format, style_preset
#   edit/replace-background-and-relight (a job): subject_image (required); background_prompt
#     or a background_reference image; foreground_prompt, negative_prompt,
#     preserve_original_subject 0-1 (default 0.6), original_background_depth 0-1 (default
#     0.5), keep_original_background "true"/"false" (default false), light_source_direction
#     (left, right, above, below), a light_reference image, light_source_strength 0-1 (needs
#     light_reference or light_source_direction), seed, output_format
# Only the output format and seed defaults enter the key (as for the other edits): the
# strength defaults are Stability's to change. Comfy's own schemas allow png only and no
# "left" light; those are Comfy's limits, not Stability's, and are not copied here.
_UNIT = Rule("number", 0, 1)
_CONTROL_FIELDS: Mapping[str, Rule] = {
    **_V2_SAMPLES,
    "prompt": _PROMPT,
    "negative_prompt": _OPTIONAL_PROMPT,
    "control_strength": _UNIT,
    "seed": _SEED,
    "output_format": _FORMAT,
    "style_preset": _STYLE,
}
V2_CONTROL_SKETCH = FormTable(
    fields=_CONTROL_FIELDS, files={"image": _INPUT_IMAGE}, defaults=_EDIT_DEFAULTS
)
V2_CONTROL_STRUCTURE = FormTable(
    fields=_CONTROL_FIELDS, files={"image": _INPUT_IMAGE}, defaults=_EDIT_DEFAULTS
)
V2_CONTROL_STYLE = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "aspect_ratio": _ASPECT,
        "fidelity": _UNIT,
        "seed": _SEED,
        "output_format": _FORMAT,
        "style_preset": _STYLE,
    },
    files={"image": _INPUT_IMAGE},
    defaults=_GENERATE_DEFAULTS,
)
V2_CONTROL_STYLE_TRANSFER = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _OPTIONAL_PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "style_strength": _UNIT,
        "composition_fidelity": _UNIT,
        "change_strength": Rule("number", 0.1, 1),
        "seed": _SEED,
        "output_format": _FORMAT,
    },
    files={"init_image": _INPUT_IMAGE, "style_image": _INPUT_IMAGE},
    defaults=_EDIT_DEFAULTS,
)
V2_EDIT_SEARCH_AND_RECOLOR = FormTable(
    fields={
        **_V2_SAMPLES,
        "prompt": _PROMPT,
        "select_prompt": _PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "grow_mask": Rule("number", 0, 20),
        "seed": _SEED,
        "output_format": _FORMAT,
        "style_preset": _STYLE,
    },
    files={"image": _INPUT_IMAGE},
    defaults=_EDIT_DEFAULTS,
)
LIGHT_DIRECTIONS = ("left", "right", "above", "below")
V2_EDIT_REPLACE_BACKGROUND_AND_RELIGHT = FormTable(
    fields={
        **_V2_SAMPLES,
        "background_prompt": _OPTIONAL_PROMPT,
        "foreground_prompt": _OPTIONAL_PROMPT,
        "negative_prompt": _OPTIONAL_PROMPT,
        "preserve_original_subject": _UNIT,
        "original_background_depth": _UNIT,
        "keep_original_background": Rule("string", choices=("true", "false")),
        "light_source_direction": Rule("string", choices=LIGHT_DIRECTIONS),
        "light_source_strength": _UNIT,
        "seed": _SEED,
        "output_format": _FORMAT,
    },
    files={
        "subject_image": _INPUT_IMAGE,
        "background_reference": FileRule(min_side=64),
        "light_reference": FileRule(min_side=64),
    },
    defaults=_EDIT_DEFAULTS,
    one_of=(
        OneOf(("background_prompt", "background_reference")),
        OneOf(("light_reference", "light_source_direction"), when="light_source_strength"),
    ),
)
