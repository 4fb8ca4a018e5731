"""Answers derived from an image, built once per artifact and kept while it lives.

A hit on an entry held in the memory tier is answered from the same Artifact objects every
time, so an answer that has to be derived from the image (the base64 inside a JSON body,
3.5 MB for a 2.6 MB image) is built on the first hit and reused by the next ones; the
upstream's own base64 is remembered at decode time, so even the first JSON answer costs no
encoding. Kept in a weak mapping: when the memory tier lets an artifact go, its renderings
go with it, and the tier's byte budget already counts them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable

from cache.model import Artifact

_forms: weakref.WeakKeyDictionary[Artifact, dict[str, bytes]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def rendered(artifact: Artifact, form: str, build: Callable[[Artifact], bytes]) -> bytes:
    """`build(artifact)`, computed once per artifact object and form name."""
    with _lock:
        held = _forms.get(artifact)
        body = held.get(form) if held else None
    if body is None:
        body = build(artifact)
        remember(artifact, form, body)
    return body


def remember(artifact: Artifact, form: str, body: bytes) -> None:
    """Keep a form already at hand (the upstream's own JSON, say)."""
    with _lock:
        _forms.setdefault(artifact, {})[form] = body
