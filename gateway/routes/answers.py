"""Reading Stability's JSON answers without handling their megabytes of base64 twice.

A 2.6 MB image arrives as 3.5 MB of base64 inside a JSON body. Parsing that whole body
builds a 3.5 MB str only to decode it again; instead the base64 strings are found in the
raw bytes (base64 holds no quote or backslash, so the first quote after the field's
opening one closes it), cut out, and only the small rest is parsed as JSON. A body that
does not look like that (an escaped character inside, a field name seen twice...) is
parsed the ordinary way. The base64 is decoded by pybase64 (SIMD: about 0.2 ms for 3.5
MB, where binascii takes 8), strictly: anything but the canonical alphabet and padding is
refused.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any

import pybase64

from gateway.errors import UpstreamError


@dataclass(frozen=True)
class Image:
    data: bytes
    b64: bytes | memoryview  # exactly as the upstream sent it (a view into its body)
    fields: dict[str, Any]  # the other fields of its JSON object


def _cut(raw: bytes, field: bytes) -> tuple[bytes, list[memoryview]] | None:
    """(the body with each `field` string emptied, views of the strings), or None to parse
    normally. The strings are views, not copies: 3.5 MB copied costs a millisecond or two."""
    name = b'"' + field + b'"'
    view = memoryview(raw)
    parts: list[bytes] = []
    texts: list[memoryview] = []
    at = 0
    while True:
        found = raw.find(name, at)
        if found < 0:
            break
        colon = found + len(name)
        while colon < len(raw) and raw[colon] in b" \t\r\n":
            colon += 1
        if colon >= len(raw) or raw[colon] != ord(":"):
            return None
        start = colon + 1
        while start < len(raw) and raw[start] in b" \t\r\n":
            start += 1
        if start >= len(raw) or raw[start] != ord('"'):
            return None
        end = raw.find(b'"', start + 1)
        if end < 0 or raw.find(b"\\", start + 1, end) >= 0:
            return None
        parts.append(raw[at : start + 1])
        texts.append(view[start + 1 : end])
        at = end
    if not texts:
        return None
    parts.append(raw[at:])
    return b"".join(parts), texts


def decode(text: bytes | memoryview | str) -> bytes:
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UpstreamError(f"upstream sent an image with invalid base64 ({exc})") from exc


def parse(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UpstreamError(f"upstream sent a body that is not valid JSON ({exc})") from exc


def v1_images(raw: bytes) -> list[Image]:
    """The images of a v1 answer, `{"artifacts": [{"base64", "seed", "finishReason"}]}`."""
    cut = _cut(raw, b"base64")
    payload = parse(cut[0] if cut else raw)
    items = payload.get("artifacts") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise UpstreamError("upstream sent an unexpected JSON shape (no artifacts)")
    if cut is not None and (len(cut[1]) != len(items) or any(i.get("base64") for i in items)):
        return v1_images_parsed(raw)  # the cut did not line up with the artifacts
    texts: list[bytes | memoryview] = list(cut[1]) if cut else [_text(i, "base64") for i in items]
    return [Image(decode(t), t, i) for t, i in zip(texts, items, strict=True)]


def v1_images_parsed(raw: bytes) -> list[Image]:
    payload = parse(raw)
    items = payload.get("artifacts") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        raise UpstreamError("upstream sent an unexpected JSON shape (no artifacts)")
    texts = [_text(i, "base64") for i in items]
    return [Image(decode(t), t, i) for t, i in zip(texts, items, strict=True)]


def v2_image(raw: bytes) -> Image:
    """The image of a v2beta answer, `{"image", "finish_reason", "seed"}`."""
    cut = _cut(raw, b"image")
    payload = parse(cut[0] if cut else raw)
    if not isinstance(payload, dict):
        raise UpstreamError("upstream sent an unexpected JSON shape (not an object)")
    if cut is not None and (len(cut[1]) != 1 or payload.get("image") != ""):
        payload, cut = parse(raw), None
        if not isinstance(payload, dict):
            raise UpstreamError("upstream sent an unexpected JSON shape (not an object)")
    text: bytes | memoryview = cut[1][0] if cut else _text(payload, "image")
    return Image(decode(text), text, payload)


def _text(item: dict[str, Any], field: str) -> bytes:
    value = item.get(field)
    if not isinstance(value, str):
        raise UpstreamError(f"upstream sent an unexpected JSON shape (no {field})")
    try:
        return value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise UpstreamError(f"upstream sent an image with invalid base64 ({exc})") from exc
