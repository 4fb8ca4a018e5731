"""Upstream answers passed on to the caller as Stability sent them."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from starlette.responses import Response

# Upstream headers worth passing back with an answer; hop-by-hop headers and the length
# (which the server sets) are not.
KEPT_HEADERS = frozenset(
    {"content-type", "retry-after", "x-request-id", "finish-reason", "seed", "content-disposition"}
)


def forward(response: httpx.Response, headers: Mapping[str, str]) -> Response:
    """The upstream's answer (status, body, kept headers), plus the gateway's `headers`."""
    kept = {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    return Response(response.content, status_code=response.status_code, headers={**kept, **headers})


def is_v2(path: str) -> bool:
    """v2beta paths answer errors in v2beta's shape, `{"id","name","errors"}`."""
    return path.startswith("/v2beta/") or path.startswith("/v2/")
