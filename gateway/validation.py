"""Parameter rules as data: one table per route, checked before any credit is spent.

A rule names a field's type, bounds and allowed values; `check_fields` walks a table and
raises BadRequest with the real API's error name where one is known (`invalid_samples`,
`invalid_prompts`, ...) and `bad_request` otherwise, with a message naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.errors import BadRequest

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
MAX_PROMPT_CHARS = 2000


@dataclass(frozen=True)
class Rule:
    kind: str  # "int" | "number" | "string" | "object"
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[str] | None = None
    multiple_of: int | None = None
    max_length: int | None = None
    error: str = "bad_request"


TEXT_TO_IMAGE_RULES: Mapping[str, Rule] = {
    "cfg_scale": Rule("number", 0, 35),
    "clip_guidance_preset": Rule("string", choices=CLIP_GUIDANCE_PRESETS),
    "height": Rule("int", 128, multiple_of=64, error="invalid_height_or_width"),
    "width": Rule("int", 128, multiple_of=64, error="invalid_height_or_width"),
    "sampler": Rule("string", choices=SAMPLERS),
    "samples": Rule("int", 1, 10, error="invalid_samples"),
    "seed": Rule("int", 0, MAX_SEED),
    "steps": Rule("int", 10, 50),
    "style_preset": Rule("string", choices=STYLE_PRESETS),
    "extras": Rule("object"),
}


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def check_value(name: str, value: Any, rule: Rule) -> None:
    def fail(why: str) -> None:
        raise BadRequest(f"{name}: {why}", name=rule.error)

    if rule.kind == "int" and not _is_int(value):
        fail(f"expected an integer, got {value!r}")
    if rule.kind == "number" and (isinstance(value, bool) or not isinstance(value, int | float)):
        fail(f"expected a number, got {value!r}")
    if rule.kind == "string" and not isinstance(value, str):
        fail(f"expected a string, got {value!r}")
    if rule.kind == "object" and not isinstance(value, dict):
        fail("expected an object")
    if rule.minimum is not None and value < rule.minimum:
        fail(f"must be >= {rule.minimum:g}, got {value!r}")
    if rule.maximum is not None and value > rule.maximum:
        fail(f"must be <= {rule.maximum:g}, got {value!r}")
    if rule.multiple_of is not None and int(value) % rule.multiple_of:
        fail(f"must be a multiple of {rule.multiple_of}, got {value!r}")
    if rule.choices is not None and value not in rule.choices:
        fail(f"must be one of {', '.join(rule.choices)}; got {value!r}")
    if rule.max_length is not None and len(value) > rule.max_length:
        fail(f"must be at most {rule.max_length} characters")


def check_fields(params: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    for name, rule in rules.items():
        if name in params and params[name] is not None:
            check_value(name, params[name], rule)


def check_text_prompts(prompts: Any) -> None:
    if not isinstance(prompts, list) or not prompts:
        raise BadRequest("text_prompts: at least one prompt is required", name="invalid_prompts")
    for i, prompt in enumerate(prompts):
        where = f"text_prompts[{i}]"
        if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
            raise BadRequest(f"{where}: expected an object with a text", name="invalid_prompts")
        text = prompt["text"]
        if not text.strip():
            raise BadRequest(f"{where}.text: must not be empty", name="invalid_prompts")
        if len(text) > MAX_PROMPT_CHARS:
            raise BadRequest(
                f"{where}.text: must be at most {MAX_PROMPT_CHARS} characters, got {len(text)}",
                name="invalid_prompts",
            )
        weight = prompt.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise BadRequest(f"{where}.weight: expected a number", name="invalid_prompts")


def check_engine_dimensions(engine: str, width: Any, height: Any) -> None:
    if engine in SDXL_V1_ENGINES and (width, height) not in SDXL_V1_SIZES:
        allowed = ", ".join(f"{w}x{h}" for w, h in SDXL_V1_SIZES)
        raise BadRequest(
            f"For the {engine} engine, width x height must be one of: {allowed}. "
            f"Got {width}x{height}. (For 16:9 video frames, ask for 1344x768 and scale up.)",
            name="invalid_sdxl_v1_dimensions",
        )
