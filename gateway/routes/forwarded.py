"""Every other Stability path, forwarded as sent: 3D, audio, video, routes added later.

    /v1/*, /v2beta/*, /v2/*   any method; path, query and body as sent, with the caller's
                              Content-Type and Accept (and Accept-Encoding); the answer's
                              status, headers and body passed back as they arrive

So the gateway is a drop-in base URL for everything Stability serves, not just the routes it
caches. These calls go through the UpstreamClient like every other: the gateway's key (or
the caller's Authorization when it has none) plus FORWARDED_HEADERS, the shared rate limit,
retries on 429/5xx, and a free record in the credits ledger (their price is not known here).
They are never cached: nothing says their answers can be reused.

Streaming and retries: the answer's body is not read by the gateway but streamed to the
caller as it arrives (a 20 MB 3D model is never held whole). A retryable status (429, 5xx)
is seen from the status line, before any of the body, so it is retried as usual: its body
(a short error) is read and dropped. Once a non-retryable status has arrived, its body
goes to the caller and nothing is retried: an upstream that breaks off mid-body breaks the
caller's answer off too, and the caller retries if it wants. The request body is read whole
(bounded by `max_body_bytes`), since a retry must send it again.

The path and query are checked before anything goes upstream, since they are joined to the
upstream URL with the gateway's own key: every segment must be plain RFC 3986 path
characters, and neither as sent nor percent-decoded be `.` or `..`, hold a slash or
backslash (`%2F`, `%5C`) or a control character, or be empty (but the last); the query must
be printable ASCII with valid percent escapes. Anything else is a 400 `invalid_path` in
Stability's shape. A known route asked with a method it does not take keeps its 405.

Offline and replay modes have no upstream: these paths answer 503 `offline_mode`.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route

from gateway.callers import ticket_of
from gateway.config import Settings
from gateway.deadline import Deadline
from gateway.errors import BadRequest, GatewayError
from gateway.generation import UpstreamRequest
from gateway.http import access
from gateway.http.disconnect import ClientGone, unless_disconnected
from gateway.http.forward import is_v2, stream
from gateway.upstream import UpstreamClient

PREFIXES = ("v1", "v2beta", "v2")
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
MAX_PATH_BYTES = 2048
MAX_QUERY_BYTES = 8192
# RFC 3986 pchar: unreserved, sub-delims, ":" and "@", or a percent escape.
_SEGMENT = re.compile(rb"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})*")
# Printable ASCII but "#" (a fragment never goes to a server) and a bare "%".
_QUERY = re.compile(rb'(?:[!"$&-~]|%[0-9A-Fa-f]{2})*')


def _refuse(why: str) -> BadRequest:
    return BadRequest(why, name="invalid_path")


def check_path(raw_path: bytes) -> None:
    """Refuse a path that could reach another upstream URL than the one it names."""
    if len(raw_path) > MAX_PATH_BYTES:
        raise _refuse(f"the path is longer than {MAX_PATH_BYTES} bytes")
    segments = raw_path.split(b"/")[1:]
    for index, segment in enumerate(segments):
        shown = segment[:40].decode("latin-1").encode("unicode_escape").decode("ascii")
        if not segment:
            if index == len(segments) - 1:
                continue  # a trailing slash
            raise _refuse("the path has an empty segment (//)")
        if not _SEGMENT.fullmatch(segment):
            raise _refuse(f"path segment {shown!r} holds characters a URL path may not")
        decoded = unquote_to_bytes(segment)
        if decoded in (b".", b".."):
            raise _refuse(f"path segment {shown!r} is a dot segment")
        if any(byte < 0x20 or byte == 0x7F or byte in b"/\\" for byte in decoded):
            raise _refuse(f"path segment {shown!r} encodes a slash, backslash or control")


def check_query(query: bytes) -> None:
    if len(query) > MAX_QUERY_BYTES:
        raise _refuse(f"the query is longer than {MAX_QUERY_BYTES} bytes")
    if not _QUERY.fullmatch(query):
        raise _refuse("the query holds characters or escapes a URL may not")


def target(request: Request) -> str:
    """The path and query exactly as sent, once checked."""
    raw_path = request.scope.get("raw_path") or quote(request.url.path).encode("ascii")
    query = request.scope.get("query_string", b"")
    check_path(raw_path)
    check_query(query)
    return (raw_path + (b"?" + query if query else b"")).decode("ascii")


class Forwarded:
    """The catch-all under PREFIXES; listed after every route the gateway knows."""

    def __init__(self, settings: Settings, upstream: UpstreamClient | None) -> None:
        self.mode = settings.mode
        self.deadline_seconds = settings.timeouts.deadline_seconds
        self.upstream = upstream
        self._routes = [
            Route(f"/{prefix}/{{rest:path}}", self.forward, methods=METHODS) for prefix in PREFIXES
        ]

    def routes(self) -> list[BaseRoute]:
        return list(self._routes)

    async def forward(self, request: Request) -> Response:
        try:
            return await self._forward(request)
        except GatewayError as exc:
            return exc.response(v2=is_v2(request.url.path))

    def _known_methods(self, request: Request) -> set[str] | None:
        """The methods of a known route at this path, when it does not take this one (the
        router picked this catch-all because it matches fully, the known route partly)."""
        for route in request.app.router.routes:
            if route in self._routes or not isinstance(route, Route):
                continue
            if route.matches(request.scope)[0] is Match.PARTIAL:
                return set(route.methods or ())
        return None

    async def _forward(self, request: Request) -> Response:
        methods = self._known_methods(request)
        if methods is not None:
            raise GatewayError(
                f"{request.method} is not allowed on {request.url.path}",
                name="method_not_allowed",
                status=405,
                headers={"Allow": ", ".join(sorted(methods))},
            )
        path = target(request)
        if self.upstream is None:
            raise GatewayError(
                f"{request.url.path} is forwarded to Stability as sent, and in {self.mode} "
                "mode the gateway has no upstream",
                name="offline_mode",
                status=503,
            )
        body = await request.body()
        sent_body = body or "content-length" in request.headers
        prefix = request.url.path.split("/")[1]
        upstream_request = UpstreamRequest(
            request.method,
            path,
            accept=request.headers.get("accept", ""),
            route=f"{prefix}/*",  # one metric label per prefix, whatever callers send
            forwarded=True,
            content=body if sent_body else None,
            content_type=request.headers.get("content-type", ""),
            headers={
                name: request.headers[name]
                for name in ("accept-encoding",)
                if name in request.headers
            },
        )
        sending = self.upstream.send(
            upstream_request,
            request.headers,
            deadline=Deadline(self.deadline_seconds),
            ticket=ticket_of(request.scope),
        )
        try:
            answer = await unless_disconnected(request, sending)
        except ClientGone:
            return Response(status_code=499)
        record = access.current()
        if record is not None:
            record.cache = "BYPASS"
            record.upstream_status = answer.response.status_code
            record.attempts = answer.attempts
        return stream(answer.response, {"X-Cache": "BYPASS"})
