"""Stability's v1 routes as data: text-to-image's JSON fields, and the multipart tables of
image-to-image, masking and upscale (per engine where they differ)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Literal

from gateway.errors import BadRequest
from gateway.validation.rules import ONE_SAMPLE, FileRule, FormTable, Rule, When

STYLE_PRESETS = (
    "3d-model", "analog-film", "anime", "cinematic", "comic-book", "digital-art", "enhance",
    "fantasy-art", "isometric", "line-art", "low-poly", "modeling-compound", "neon-punk",
    "origami", "photographic", "pixel-art", "tile-texture",
)  # fmt: skip
SAMPLERS = (
    "DDIM", "DDPM", "K_DPMPP_2M", "K_DPMPP_2S_ANCESTRAL", "K_DPM_2", "K_DPM_2_ANCESTRAL",
    "K_EULER", "K_EULER_ANCESTRAL", "K_HEUN", "K_LMS",
)  # fmt: skip
CLIP_GUIDANCE_PRESETS = ("FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST")

SDXL_V1_SIZES: tuple[tuple[int, int], ...] = (
    (1024, 1024), (1152, 896), (1216, 832), (1344, 768), (1536, 640),
    (640, 1536), (768, 1344), (832, 1216), (896, 1152),
)  # fmt: skip
# Engines that only accept the SDXL 1.0 sizes (the real API answers 400
# invalid_sdxl_v1_dimensions for anything else).
SDXL_V1_ENGINES = frozenset({"stable-diffusion-xl-1024-v1-0", "stable-diffusion-xl-1024-v0-9"})

MAX_SEED = 4_294_967_295
# `extras` is an object passed upstream as sent and stored with the entry: bounded in its
# encoded size (its depth is bounded with the whole body's, see routes.common).
MAX_EXTRAS_BYTES = 64 * 1024
# The top-level fields of the v1 text-to-image body, as Stability documents them
# (TextToImageRequestBody: text_prompts, height, width, and GenerationRequestOptionalParams).
TEXT_TO_IMAGE_FIELDS = (
    "text_prompts", "height", "width", "cfg_scale", "clip_guidance_preset", "sampler",
    "samples", "seed", "steps", "style_preset", "extras",
)  # fmt: skip
V1_UPSCALE_MIN_SIDE = 512
V1_UPSCALE_MAX_PIXELS = 4_194_304  # 2048x2048, or 4096x1024
INIT_IMAGE_MODES = ("IMAGE_STRENGTH", "STEP_SCHEDULE")
MASK_SOURCES = ("MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK", "INIT_IMAGE_ALPHA")

TEXT_TO_IMAGE_RULES: Mapping[str, Rule] = {
    "cfg_scale": Rule("number", 0, 35),
    "clip_guidance_preset": Rule("string", choices=CLIP_GUIDANCE_PRESETS),
    # No Stability v1 engine goes beyond 2048 a side; the bound also keeps an offline
    # placeholder from allocating gigabytes.
    "height": Rule("int", 128, 2048, multiple_of=64, error="invalid_height_or_width"),
    "width": Rule("int", 128, 2048, multiple_of=64, error="invalid_height_or_width"),
    "sampler": Rule("string", choices=SAMPLERS),
    "samples": Rule("int", 1, 10, error="invalid_samples"),
    "seed": Rule("int", 0, MAX_SEED),
    "steps": Rule("int", 10, 50),
    "style_preset": Rule("string", choices=STYLE_PRESETS),
    "extras": Rule("object"),
}


def check_extras(extras: Any) -> None:
    """`extras` goes upstream as sent and is stored with the entry: at most MAX_EXTRAS_BYTES."""
    if extras is None:
        return
    size = len(json.dumps(extras, ensure_ascii=False).encode("utf-8"))
    if size > MAX_EXTRAS_BYTES:
        raise BadRequest(f"extras: {size} bytes encoded, over the {MAX_EXTRAS_BYTES} byte limit")


def check_engine_dimensions(engine: str, width: Any, height: Any) -> None:
    if engine in SDXL_V1_ENGINES and (width, height) not in SDXL_V1_SIZES:
        allowed = ", ".join(f"{w}x{h}" for w, h in SDXL_V1_SIZES)
        raise BadRequest(
            f"For the {engine} engine, width x height must be one of: {allowed}. "
            f"Got {width}x{height}. (For 16:9 video frames, ask for 1344x768 and scale up.)",
            name="invalid_sdxl_v1_dimensions",
        )


def check_upscale_target(
    init: tuple[int, int], width: int | None, height: int | None
) -> tuple[int, int]:
    """v1 upscale: the output size, aspect kept from the init image (x2 when neither width
    nor height is given), within the API's pixel limit."""
    init_width, init_height = init
    if width:
        size = (width, round(width * init_height / init_width))
    elif height:
        size = (round(height * init_width / init_height), height)
    else:
        size = (2 * init_width, 2 * init_height)
    if size[0] * size[1] > V1_UPSCALE_MAX_PIXELS:
        raise BadRequest(
            f"the upscaled image would be {size[0]}x{size[1]}, over the "
            f"{V1_UPSCALE_MAX_PIXELS} pixel limit",
            name="invalid_height_or_width",
        )
    return size


# v1 image-to-image, masking, upscale --------------------------------------------------------

_V1_SHARED = {
    k: v for k, v in TEXT_TO_IMAGE_RULES.items() if k not in ("width", "height", "extras")
}
_V1_IMAGE_DEFAULTS: Mapping[str, Any] = {"samples": 1, "seed": 0}

V1_IMAGE_TO_IMAGE = FormTable(
    fields={
        **_V1_SHARED,
        "init_image_mode": Rule("string", choices=INIT_IMAGE_MODES),
        "image_strength": Rule("number", 0, 1),
        "step_schedule_start": Rule("number", 0, 1),
        "step_schedule_end": Rule("number", 0, 1),
    },
    files={"init_image": FileRule(required=True)},
    defaults={**_V1_IMAGE_DEFAULTS, "init_image_mode": "IMAGE_STRENGTH"},
    text_prompts="required",
)
V1_MASKING = FormTable(
    fields={**_V1_SHARED, "mask_source": Rule("string", choices=MASK_SOURCES, required=True)},
    files={"init_image": FileRule(required=True), "mask_image": FileRule()},
    defaults=_V1_IMAGE_DEFAULTS,
    when=(When("mask_image", "required", "mask_source", ("MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK")),),
    text_prompts="required",
    same_size=("init_image", "mask_image"),
)
# SDXL 1.0 draws only its own sizes, and an image-to-image output has the init image's size.
_SDXL_INIT_IMAGE = FileRule(required=True, sizes=SDXL_V1_SIZES, error="invalid_sdxl_v1_dimensions")
V1_IMAGE_TO_IMAGE_SDXL = dataclasses.replace(
    V1_IMAGE_TO_IMAGE, files={"init_image": _SDXL_INIT_IMAGE}
)
V1_MASKING_SDXL = dataclasses.replace(
    V1_MASKING, files={**V1_MASKING.files, "init_image": _SDXL_INIT_IMAGE}
)
_V1_UPSCALE_SIZE = {
    "width": Rule("int", V1_UPSCALE_MIN_SIDE, error="invalid_height_or_width"),
    "height": Rule("int", V1_UPSCALE_MIN_SIDE, error="invalid_height_or_width"),
    "samples": ONE_SAMPLE,
}
V1_UPSCALE_ESRGAN = FormTable(
    fields=_V1_UPSCALE_SIZE,
    files={"image": FileRule(required=True)},
    when=(When("height", "forbidden", "width"),),
)
V1_UPSCALE_LATENT = FormTable(
    fields={
        **_V1_UPSCALE_SIZE,
        "cfg_scale": Rule("number", 0, 35),
        "seed": Rule("int", 0, MAX_SEED),
        "steps": Rule("int", 10, 50),
    },
    files={"image": FileRule(required=True)},
    when=(When("height", "forbidden", "width"),),
    text_prompts="optional",
)
V1Kind = Literal["image-to-image", "masking", "upscale"]
# Per route, then per engine; an engine not listed gets the route's first table.
V1_TABLES: Mapping[str, Mapping[str, FormTable]] = {
    "image-to-image": {
        "*": V1_IMAGE_TO_IMAGE,
        **dict.fromkeys(SDXL_V1_ENGINES, V1_IMAGE_TO_IMAGE_SDXL),
    },
    "masking": {"*": V1_MASKING, **dict.fromkeys(SDXL_V1_ENGINES, V1_MASKING_SDXL)},
    "upscale": {
        "*": V1_UPSCALE_ESRGAN,
        "esrgan-v1-x2plus": V1_UPSCALE_ESRGAN,
        "stable-diffusion-x4-latent-upscaler": V1_UPSCALE_LATENT,
    },
}


def v1_table(kind: V1Kind, engine: str) -> FormTable:
    tables = V1_TABLES[kind]
    return tables.get(engine, tables["*"])
