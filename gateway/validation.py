"""Parameter rules as data: one table per route, checked before any credit is spent.

A rule names a field's type, bounds and allowed values; `check_fields` walks a table and
raises BadRequest with the real API's error name where one is known (`invalid_samples`,
`invalid_prompts`, ...) and `bad_request` otherwise, with a message naming the field.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from cache.keys import normalise
from gateway.errors import BadRequest, PayloadTooLarge

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
# Prompts per request. Stability sets no number, but every prompt is stored with the entry
# (and a multipart body holds at most 200 fields: 100 text/weight pairs), so the JSON route
# gets the same bound rather than letting a 10 MiB body of prompts into the cache metadata.
MAX_PROMPTS = 100
# `extras` is an object passed upstream as sent and stored with the entry: bounded in its
# encoded size (its depth is bounded with the whole body's, see routes.common).
MAX_EXTRAS_BYTES = 64 * 1024
# The top-level fields of the v1 text-to-image body, as Stability documents them
# (TextToImageRequestBody: text_prompts, height, width, and GenerationRequestOptionalParams).
TEXT_TO_IMAGE_FIELDS = (
    "text_prompts", "height", "width", "cfg_scale", "clip_guidance_preset", "sampler",
    "samples", "seed", "steps", "style_preset", "extras",
)  # fmt: skip
PROMPTS_SHAPE = "a list of {text, weight} objects"


@dataclass(frozen=True)
class Rule:
    kind: str  # "int" | "number" | "string" | "object"
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[str] | None = None
    multiple_of: int | None = None
    max_length: int | None = None
    error: str = "bad_request"
    required: bool = False  # absent, null or "" is refused
    why: str = ""  # said with every refusal, when the bounds need explaining


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


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def check_value(name: str, value: Any, rule: Rule) -> None:
    def fail(why: str) -> None:
        reason = f" ({rule.why})" if rule.why else ""
        raise BadRequest(f"{name}: {why}{reason}", name=rule.error)

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
        value = params.get(name)
        if rule.required and (value is None or value == ""):
            raise BadRequest(f"{name}: required", name=rule.error)
        if value is not None:
            check_value(name, value, rule)


def check_known_fields(body: Mapping[str, Any], known: Sequence[str]) -> None:
    """Refuse fields the route does not take, naming them, as Stability does: an unknown field
    would otherwise be paid for, forwarded and stored with the entry, unbounded."""
    unknown = [name for name in body if name not in known]
    if unknown:
        names = ", ".join(repr(name[:40]) for name in unknown[:10])
        raise BadRequest(
            f"unknown field(s) {names}; this route takes {', '.join(known)}", name="bad_request"
        )


def check_extras(extras: Any) -> None:
    """`extras` goes upstream as sent and is stored with the entry: at most MAX_EXTRAS_BYTES."""
    if extras is None:
        return
    size = len(json.dumps(extras, ensure_ascii=False).encode("utf-8"))
    if size > MAX_EXTRAS_BYTES:
        raise BadRequest(f"extras: {size} bytes encoded, over the {MAX_EXTRAS_BYTES} byte limit")


def _json_kind(value: Any) -> str:
    """What a JSON value is, in the words of JSON rather than Python."""
    kinds = ((bool, "a boolean"), (int | float, "a number"), (str, "a string"), (dict, "an object"))
    return next((word for kind, word in kinds if isinstance(value, kind)), "null")


def check_text_prompts(prompts: Any) -> None:
    """The v1 prompts: a non-empty list of {text, weight} objects, checked as Stability does."""
    if not isinstance(prompts, list):
        raise BadRequest(
            f"text_prompts: required, and must be {PROMPTS_SHAPE}, e.g. "
            f'[{{"text": "a cat", "weight": 1}}]; got {_json_kind(prompts)}',
            name="invalid_prompts",
        )
    if not prompts:
        raise BadRequest(
            f"text_prompts: at least one prompt is required ({PROMPTS_SHAPE})",
            name="invalid_prompts",
        )
    if len(prompts) > MAX_PROMPTS:
        raise BadRequest(
            f"text_prompts: at most {MAX_PROMPTS} prompts, got {len(prompts)}",
            name="invalid_prompts",
        )
    for i, prompt in enumerate(prompts):
        where = f"text_prompts[{i}]"
        if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
            raise BadRequest(
                f"{where}: expected a {{text, weight}} object with a string text, "
                f"got {_json_kind(prompt)}",
                name="invalid_prompts",
            )
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


# --- Multipart routes: one FormTable per route (and engine), checked by `check_form` ------
#
# A FormTable holds everything the gateway knows about one multipart route: the rules for
# its form fields (the same `Rule`s as above), its uploads (`FileRule`), the API's documented
# defaults that may safely stand in for an absent field in the cache key, and the rules
# between fields (`When`). Routes never test parameters themselves; they pick a table.

MAX_V2_SEED = 4_294_967_294
MAX_V2_PROMPT_CHARS = 10_000
# Text fields a table does not know go upstream as sent and into the key and the entry's
# metadata; each is bounded like the longest documented text field (a v2beta prompt).
MAX_EXTRA_FIELD_CHARS = MAX_V2_PROMPT_CHARS
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
V1_UPSCALE_MIN_SIDE = 512
V1_UPSCALE_MAX_PIXELS = 4_194_304  # 2048x2048, or 4096x1024

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
INIT_IMAGE_MODES = ("IMAGE_STRENGTH", "STEP_SCHEDULE")
MASK_SOURCES = ("MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK", "INIT_IMAGE_ALPHA")
# output_format -> Pillow's name for it
PIL_FORMATS: Mapping[str, str] = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")

MAX_NUMBER_CHARS = 40
# Uploads larger than this are refused before decoding unless a rule says otherwise
# (Stability's own inputs top out around 9.4 megapixels).
MAX_UPLOAD_PIXELS = 4096 * 4096
# ASCII digits only: `\d` also matches other scripts' digits ("\u0667" is 7 to int()), which
# would put 7 in the key while the raw text went upstream.
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_PROMPT_FIELD = re.compile(r"text_prompts\[([0-9]+)\]\[(text|weight)\]")
_BLANKS = " \t\r\n"  # what parse_number trims (str.strip() would trim any Unicode space)


@dataclass(frozen=True)
class FileRule:
    """One uploaded file: present or not, its size in bytes, and (as a decoded image) its
    format and pixel limits."""

    required: bool = False
    max_bytes: int = MAX_UPLOAD_BYTES
    min_side: int = 0
    max_pixels: int | None = None
    formats: tuple[str, ...] = UPLOAD_FORMATS
    sizes: Sequence[tuple[int, int]] | None = None  # the only (width, height) allowed
    error: str = "bad_request"  # the error name for a size outside `sizes`


@dataclass(frozen=True)
class When:
    """A rule between fields: while `other` is present (any value when `values` is None, else
    one of `values`), `field` is required, forbidden, or never filled in from the defaults."""

    field: str
    then: Literal["required", "forbidden", "no_default"]
    other: str
    values: tuple[str, ...] | None = None

    def applies(self, present: Mapping[str, Any]) -> bool:
        if self.other not in present:
            return False
        return self.values is None or present[self.other] in self.values

    def describe(self) -> str:
        if self.values is None:
            return f"{self.other} is given"
        return f"{self.other} is {' or '.join(self.values)}"


@dataclass(frozen=True)
class FormTable:
    """Everything checked on one multipart route before a credit is spent.

    `defaults` enter the cache key only (the request goes upstream as sent): list only
    defaults the API documents and the gateway can verify or that cannot change the image,
    so that spelling one out and omitting it rightly share an entry.
    """

    fields: Mapping[str, Rule]
    files: Mapping[str, FileRule] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    when: tuple[When, ...] = ()
    text_prompts: Literal["required", "optional", "none"] = "none"  # v1 text_prompts[i][...]
    any_of: tuple[str, ...] = ()  # at least one of these must be given and non-zero
    same_size: tuple[str, ...] = ()  # uploads that must have one (width, height)


@dataclass(frozen=True)
class CheckedForm:
    params: dict[str, Any]  # the key's parameters: numbers parsed, defaults in, normalised
    uploads: dict[str, bytes]  # the key's files: the route's uploads (not empty extras)
    image_sizes: dict[str, tuple[int, int]]  # (width, height) of each uploaded image


def parse_number(name: str, raw: str, rule: Rule) -> int | float:
    """A form value the API defines as a number; "7", "7.0" and "7e0" are all 7 later."""
    text = raw.strip(_BLANKS)
    # Length first: int() refuses over 4300 digits with a ValueError, and no API number
    # needs more than a few dozen characters.
    if len(text) > MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
        raise BadRequest(f"{name}: expected a number, got {raw[:40]!r}", name=rule.error)
    value = float(text) if any(c in text for c in ".eE") else int(text)
    if not math.isfinite(value):
        raise BadRequest(f"{name}: expected a finite number, got {raw!r}", name=rule.error)
    return value


def coerce_form(fields: Mapping[str, str], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """Form values arrive as strings: parse those the rules call int or number; keep the
    rest (and fields the table does not know, which go upstream and into the key as sent)."""
    return {
        name: parse_number(name, raw, rules[name])
        if name in rules and rules[name].kind in ("int", "number")
        else raw
        for name, raw in fields.items()
    }


def form_text_prompts(fields: Mapping[str, str]) -> dict[str, Any]:
    """v1's `text_prompts[i][text]` / `text_prompts[i][weight]` form fields, checked like the
    JSON route's prompts, as key parameters: weights as numbers, 1 where absent."""
    found: dict[int, dict[str, Any]] = {}
    weight_rule = Rule("number", error="invalid_prompts")
    for name, raw in fields.items():
        if not name.startswith("text_prompts"):
            continue
        match = _PROMPT_FIELD.fullmatch(name)
        if match is None:
            raise BadRequest(
                f"{name}: expected text_prompts[<index>][text] or text_prompts[<index>][weight]",
                name="invalid_prompts",
            )
        index, part = int(match.group(1)), match.group(2)
        # One spelling per prompt field: "text_prompts[00][text]" beside "[0][text]" would
        # otherwise overwrite it here while both went upstream (two requests, one key).
        if match.group(1) != str(index) or part in found.get(index, {}):
            raise BadRequest(
                f"{name}: each text_prompts[<index>][<part>] must be written once, with the "
                "index in plain decimal",
                name="invalid_prompts",
            )
        value = raw if part == "text" else parse_number(name, raw, weight_rule)
        found.setdefault(index, {})[part] = value
    if not found:
        return {}
    if sorted(found) != list(range(len(found))):
        raise BadRequest(
            "text_prompts: indices must run 0, 1, 2, ... without gaps", name="invalid_prompts"
        )
    prompts = [{"weight": 1, **found[i]} for i in range(len(found))]
    check_text_prompts(prompts)
    return {
        f"text_prompts[{i}][{part}]": prompt[part]
        for i, prompt in enumerate(prompts)
        for part in ("text", "weight")
    }


def check_upload(name: str, data: bytes, rule: FileRule) -> tuple[int, int]:
    """Decode an uploaded image fully (a truncated upload would otherwise cost a credit and
    fail upstream) and check it against its rule; returns (width, height)."""
    if len(data) > rule.max_bytes:
        raise PayloadTooLarge(f"{name}: the file is {len(data)} bytes, over {rule.max_bytes}")
    if not data:
        raise BadRequest(f"{name}: the uploaded file is empty")
    max_pixels = rule.max_pixels or MAX_UPLOAD_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
            width, height = image.size
            # Sizes come from the header: check them before decoding, so that a small,
            # very compressible file cannot make us allocate gigabytes of pixels.
            if width * height <= max_pixels:
                image.load()
    except Exception as exc:  # Pillow raises many types for bad data
        raise BadRequest(f"{name}: not a decodable image ({exc})") from None
    if width * height > max_pixels:
        raise BadRequest(f"{name}: {width}x{height} has {width * height} pixels, over {max_pixels}")
    if image_format not in rule.formats:
        raise BadRequest(f"{name}: a {image_format} image; expected {', '.join(rule.formats)}")
    if min(width, height) < rule.min_side:
        raise BadRequest(
            f"{name}: {width}x{height} is too small; each side must be >= {rule.min_side}"
        )
    if rule.sizes is not None and (width, height) not in rule.sizes:
        allowed = ", ".join(f"{w}x{h}" for w, h in rule.sizes)
        raise BadRequest(
            f"{name}: {width}x{height} is not allowed; width x height must be one of: {allowed}",
            name=rule.error,
        )
    return width, height


def check_form(
    fields: Mapping[str, str], files: Mapping[str, bytes], table: FormTable
) -> CheckedForm:
    """Check one multipart request against its table; blocking (decodes the uploads)."""
    for name in fields:
        if name in table.files:
            raise BadRequest(f"{name}: expected a file upload, got a text field")
    for name, data in files.items():
        # An empty extra part is how Stability's own examples force multipart
        # (files={"none": ""}): it goes upstream as sent but means nothing.
        if name not in table.files and data:
            takes = ", ".join(table.files) or "no files"
            raise BadRequest(f"{name}: unexpected file upload (this route takes {takes})")
    uploads = {name: data for name, data in files.items() if name in table.files}
    prompts = form_text_prompts(fields) if table.text_prompts != "none" else {}
    for name, raw in fields.items():
        documented = name in table.fields or (bool(prompts) and name.startswith("text_prompts"))
        if not documented and len(raw) > MAX_EXTRA_FIELD_CHARS:
            raise BadRequest(
                f"{name[:40]}: {len(raw)} characters, over the {MAX_EXTRA_FIELD_CHARS} "
                "allowed for a field this route does not document"
            )
    if table.text_prompts == "required" and not prompts:
        raise BadRequest(
            "text_prompts: at least one prompt is required, as text_prompts[0][text] "
            "(and text_prompts[0][weight], 1 if absent)",
            name="invalid_prompts",
        )
    plain = {k: v for k, v in fields.items() if not (prompts and k.startswith("text_prompts"))}
    params: dict[str, Any] = {**coerce_form(plain, table.fields), **prompts}
    present: dict[str, Any] = {**params, **dict.fromkeys(uploads, True)}
    for name, value in table.defaults.items():
        held = any(w.then == "no_default" and w.field == name and w.applies(present)
                   for w in table.when)  # fmt: skip
        if name not in params and not held:
            params[name] = present[name] = value
    for rule in table.when:
        if not rule.applies(present):
            continue
        if rule.then == "required" and rule.field not in present:
            raise BadRequest(f"{rule.field}: required when {rule.describe()}")
        if rule.then == "forbidden" and rule.field in present:
            raise BadRequest(f"{rule.field}: not allowed when {rule.describe()}")
    check_fields(params, table.fields)
    if table.any_of and not any(params.get(name) for name in table.any_of):
        raise BadRequest(f"at least one of {', '.join(table.any_of)} must be greater than 0")
    for name, file_rule in table.files.items():
        if file_rule.required and name not in uploads:
            raise BadRequest(f"{name}: required file upload is missing")
    sizes = {name: check_upload(name, data, table.files[name]) for name, data in uploads.items()}
    shared = {sizes[name] for name in table.same_size if name in sizes}
    if len(shared) > 1:
        given = ", ".join(f"{n} {sizes[n][0]}x{sizes[n][1]}" for n in table.same_size if n in sizes)
        raise BadRequest(f"{' and '.join(table.same_size)} must have the same size; got {given}")
    return CheckedForm(normalise(params), uploads, sizes)


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
# Upscale and v2beta routes answer one image; Stability documents no `samples` for them. A
# caller's `samples` other than 1 would be paid for and then fail (one image for two asked),
# so it is refused up front; `samples=1` says nothing and is accepted.
ONE_SAMPLE = Rule("int", 1, 1, error="invalid_samples", why="this route answers one image")
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


def v1_table(kind: str, engine: str) -> FormTable:
    tables = V1_TABLES[kind]
    return tables.get(engine, tables["*"])


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
