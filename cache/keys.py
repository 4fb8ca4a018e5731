"""Canonical request -> cache key.

The key is the SHA-256 (hex) of these parts, each length-prefixed so that no two
different part lists can run together into the same bytes:

    1. ``stability-gateway/<KEY_VERSION>``   bump KEY_VERSION to invalidate every key at once
    2. the route template                    e.g. ``v1/text-to-image``
    3. the engine or model id                e.g. ``stable-diffusion-xl-1024-v1-0``
    4. the canonical parameters              see ``canonical_json``
    5. one part per uploaded file, sorted by field name: ``<field>=<sha256 of its bytes>``

The canonical parameters are the request's parameters *after* the gateway has filled in
its defaults (the same filled-in request is what goes upstream), serialised as JSON with:

- object keys sorted, recursively, at every depth;
- no insignificant whitespace, UTF-8 kept as is (no ``\\u`` escapes);
- numbers by value: ``7``, ``7.0`` and ``7e0`` are all written ``7``; other floats use
  Python's shortest round-trip repr; booleans stay booleans, never numbers;
- arrays kept in their order: prompt order and weights change the image, so they change
  the key;
- strings exactly as sent: whitespace inside a prompt is the caller's choice.

Headers are not parameters: neither ``Authorization`` (a key must never reach a cache key)
nor ``Accept`` (one entry serves JSON and PNG) takes part.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

KEY_VERSION = "1"


def normalise(value: Any) -> Any:
    """Normalise a parsed JSON value as described in the module docstring."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        return {str(k): normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    return json.dumps(
        normalise(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def _part(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(8, "big") + raw


def make_key(
    route: str,
    engine: str,
    params: Mapping[str, Any],
    files: Mapping[str, bytes] | None = None,
) -> str:
    digest = hashlib.sha256()
    digest.update(_part(f"stability-gateway/{KEY_VERSION}"))
    digest.update(_part(route))
    digest.update(_part(engine))
    digest.update(_part(canonical_json(params)))
    for name in sorted(files or {}):
        digest.update(_part(f"{name}={hashlib.sha256(files[name]).hexdigest()}"))  # type: ignore[index]
    return digest.hexdigest()


def scoped_key(key: str, scope: list[str]) -> str:
    """The key of the same request in a scope of its own (a private caller, a namespace, a
    random-seed variant): same format, a different entry. An empty scope is the key itself."""
    if not scope:
        return key
    digest = hashlib.sha256()
    digest.update(_part(f"stability-gateway/{KEY_VERSION}/scoped"))
    digest.update(_part(key))
    for part in scope:
        digest.update(_part(part))
    return digest.hexdigest()
