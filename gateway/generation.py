"""What a generation route hands the pipeline, and what it must be able to do.

Routes differ only in how they parse a request, what they send upstream, how they decode
the upstream's answer and how they render an entry. Everything else (cache lookup, policy,
single-flight, rate limit, retries, validation of images, storage, fallback) is the
pipeline's, once, for every route.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx
from starlette.requests import Request
from starlette.responses import Response

from cache.model import Artifact

Want = Literal["json", "image", "job"]


@dataclass
class UpstreamRequest:
    """Exactly what goes upstream (the filled-in request the key was computed from)."""

    method: str
    path: str
    json: Any = None
    data: dict[str, Any] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    accept: str = "application/json"
    route: str = ""  # the route template, for metrics ("" : the path, query left out)
    # A caller's request forwarded as sent (gateway.routes.forwarded): `path` is its raw path
    # and query, joined to the upstream URL byte for byte (the route has refused anything
    # that could reshape it); `content` is the body as sent, with `content_type`, plus
    # `headers`; the answer comes back unread, for the caller to stream and close.
    forwarded: bool = False
    content: bytes | None = None
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Generation:
    """A parsed, validated generation request."""

    route: str  # route template in the key, e.g. "v1/text-to-image"
    engine: str
    key: str
    upstream: UpstreamRequest
    want: Want  # the caller's format: JSON, image bytes, or a job id to poll (v2beta)
    expected_size: tuple[int, int] | None  # (width, height) the images must have
    expected_formats: tuple[str, ...] = ("PNG",)  # Pillow format names accepted
    random_seed: bool = False  # seed 0/absent: each upstream call gives a new image
    samples: int = 1  # images the answer must hold: fewer is a partial answer, never cached
    summary: dict[str, Any] = field(default_factory=dict)  # shown by cache inspection
    v2: bool = False  # error bodies in v2beta's shape
    ttl: float | None = None  # the entry's lifetime, when the request asked for one


class Decoder(Protocol):
    def decode(self, response: httpx.Response, generation: Generation) -> list[Artifact]:
        """Turn a 200 upstream answer into artifacts; raise UpstreamError when unusable."""
        ...


class RouteSpec(Decoder, Protocol):
    """The route-specific half of a generation endpoint."""

    v2: bool

    async def parse(self, request: Request) -> Generation: ...

    def render(
        self, artifacts: Sequence[Artifact], generation: Generation, headers: dict[str, str]
    ) -> Response: ...

    def placeholder(self, generation: Generation) -> list[Artifact]: ...
