"""Upstream answers passed on to the caller as Stability sent them.

forward   a read answer: status, body and the few headers a generation client needs
stream    an unread answer (the forwarded routes): status, every end-to-end header and
          the raw body, passed on chunk by chunk as it arrives, never held whole
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping

import anyio
import httpx
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

log = logging.getLogger("gateway.forward")

# Upstream headers worth passing back with an answer; hop-by-hop headers and the length
# (which the server sets) are not.
KEPT_HEADERS = frozenset(
    {"content-type", "retry-after", "x-request-id", "finish-reason", "seed", "content-disposition"}
)
# Never passed on by `stream`: hop-by-hop headers (RFC 9110 7.6.1), and those the gateway's
# own server writes (a second Date or Server line would contradict it).
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "proxy-authenticate", "proxy-authorization", "date", "server",
    }
)  # fmt: skip


def forward(response: httpx.Response, headers: Mapping[str, str]) -> Response:
    """The upstream's answer (status, body, kept headers), plus the gateway's `headers`."""
    kept = {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    return Response(response.content, status_code=response.status_code, headers={**kept, **headers})


def end_to_end(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    """The upstream's headers minus hop-by-hop ones (and any the upstream's Connection
    header names), repeated headers kept, in the order sent."""
    named = {
        token.strip().lower().encode("latin-1")
        for value in response.headers.get_list("connection")
        for token in value.split(",")
    }
    return [
        (name.lower(), value)
        for name, value in response.headers.raw
        if name.lower().decode("latin-1") not in HOP_BY_HOP and name.lower() not in named
    ]


class BrokenOff(Exception):
    """The upstream stopped sending in the middle of a body being relayed."""


class Relay(StreamingResponse):
    """A StreamingResponse that, when the upstream breaks off, leaves its own answer
    incomplete: the server then closes the caller's connection (uvicorn logs one line,
    "returned without completing response"), so the caller sees a broken answer, never a
    short body ended as if it were whole, and no traceback is logged for it."""

    async def stream_response(self, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except BrokenOff:
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def stream(response: httpx.Response, headers: Mapping[str, str]) -> Response:
    """The upstream's answer as it arrives, plus the gateway's `headers`.

    The body is the upstream's raw bytes (httpx does not decode them), so Content-Length
    and Content-Encoding stay true and go along. An answer already read (a retryable error
    read before the retries ran out) is passed on whole, decoded, without those two. If the
    upstream breaks off mid-body, the caller's answer is broken off too (see Relay), never
    ended as if the body were whole. The upstream response is closed once the body is sent
    or the caller goes away."""
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    own = {name for name, _ in extra}  # the gateway's say (X-Cache) replaces any upstream's
    kept = [(k, v) for k, v in end_to_end(response) if k not in own]
    if response.is_stream_consumed:
        whole = [(k, v) for k, v in kept if k not in (b"content-length", b"content-encoding")]
        answer = Response(response.content, status_code=response.status_code)
        answer.raw_headers = [*whole, *answer.raw_headers, *extra]
        return answer

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            log.warning(
                "upstream broke off %s mid-body (%s); breaking off the caller's answer",
                response.request.url.path, type(exc).__name__,
            )  # fmt: skip
            raise BrokenOff from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()

    streamed = Relay(body(), status_code=response.status_code)
    streamed.raw_headers = [*kept, *extra]
    return streamed


def is_v2(path: str) -> bool:
    """v2beta paths answer errors in v2beta's shape, `{"id","name","errors"}`."""
    return path.startswith("/v2beta/") or path.startswith("/v2/")
