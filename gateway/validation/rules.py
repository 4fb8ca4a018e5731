"""The validation engine: rules as data, and the functions that check a request against
them. It knows no route; the tables live beside it (v1.py, v2beta.py).

A `Rule` names a field's type, bounds and allowed values; `check_fields` walks a table of
them and raises BadRequest with the real API's error name where one is known
(`invalid_samples`, `invalid_prompts`, ...) and `bad_request` otherwise, with a message
naming the field. A `FormTable` describes a whole multipart route (fields, uploads,
documented defaults, rules between fields) for `check_form`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from cache.keys import normalise
from gateway.errors import BadRequest, PayloadTooLarge

MAX_PROMPT_CHARS = 2000
# Prompts per request. Stability sets no number, but every prompt is stored with the entry
# (and a multipart body holds at most 200 fields: 100 text/weight pairs), so the JSON route
# gets the same bound rather than letting a 10 MiB body of prompts into the cache metadata.
MAX_PROMPTS = 100
PROMPTS_SHAPE = "a list of {text, weight} objects"


@dataclass(frozen=True)
class Rule:
    kind: Literal["int", "number", "string", "object"]
    minimum: float | None = None
    maximum: float | None = None
    choices: Sequence[str] | None = None
    multiple_of: int | None = None
    max_length: int | None = None
    error: str = "bad_request"
    required: bool = False  # absent, null or "" is refused
    why: str = ""  # said with every refusal, when the bounds need explaining


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


# --- Multipart routes: one FormTable per route (and engine), checked by `check_form` ------
#
# A FormTable holds everything the gateway knows about one multipart route: the rules for
# its form fields (the same `Rule`s as above), its uploads (`FileRule`), the API's documented
# defaults that may safely stand in for an absent field in the cache key, and the rules
# between fields (`When`). Routes never test parameters themselves; they pick a table.

# Text fields a table does not know go upstream as sent and into the key and the entry's
# metadata; each is bounded like the longest documented text field (a v2beta prompt).
MAX_EXTRA_FIELD_CHARS = 10_000
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
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
class OneOf:
    """At least one of `names` (form fields or uploads) must be given, always or only while
    `when` is given: replace-background-and-relight takes `background_prompt` or a
    `background_reference` image, and its `light_source_strength` needs a light to act on."""

    names: tuple[str, ...]
    when: str | None = None

    def describe(self) -> str:
        needed = f"one of {', '.join(self.names)} is required"
        return needed if self.when is None else f"{self.when}: {needed} with it"


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
    one_of: tuple[OneOf, ...] = ()  # fields or uploads of which one is needed


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
    for needed in table.one_of:
        found = any(params.get(name) not in (None, "") or uploads.get(name)
                    for name in needed.names)  # fmt: skip
        if (needed.when is None or needed.when in present) and not found:
            raise BadRequest(needed.describe())
    for name, file_rule in table.files.items():
        if file_rule.required and name not in uploads:
            raise BadRequest(f"{name}: required file upload is missing")
    sizes = {name: check_upload(name, data, table.files[name]) for name, data in uploads.items()}
    shared = {sizes[name] for name in table.same_size if name in sizes}
    if len(shared) > 1:
        given = ", ".join(f"{n} {sizes[n][0]}x{sizes[n][1]}" for n in table.same_size if n in sizes)
        raise BadRequest(f"{' and '.join(table.same_size)} must have the same size; got {given}")
    return CheckedForm(normalise(params), uploads, sizes)


# Upscale and v2beta routes answer one image; Stability documents no `samples` for them. A
# caller's `samples` other than 1 would be paid for and then fail (one image for two asked),
# so it is refused up front; `samples=1` says nothing and is accepted.
ONE_SAMPLE = Rule("int", 1, 1, error="invalid_samples", why="this route answers one image")
