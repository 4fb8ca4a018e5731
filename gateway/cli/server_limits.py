"""What one connection may cost the server: header size and count, slow headers, slow
bodies, concurrent connections.

uvicorn with httptools bounds none of these by itself: it accepted an 8 MiB header and
20,000 headers (8 requests with 64 MiB headers took the gateway to 701 MiB), held 4,000
connections that sent a byte every few seconds for ever, and has no header timeout at all.
`LimitedHttpToolsProtocol` is uvicorn's own HttpToolsProtocol with these checks added at the
parser callbacks it already has; `BodyTimeout` times out a body that stops arriving. Both
answer in Stability's error shape, like every other error the gateway produces.

    refused                          answer
    request line + headers too big   431 request_header_fields_too_large, then closed
    too many headers                 431 request_header_fields_too_large, then closed
    headers not in within the bound  408 request_timeout, then closed (idle: just closed)
    no body chunk within the bound   408 request_timeout (from the app), then closed
    over max_connections             503 too_many_connections, then closed

The connection bound is per worker process; requests on connections accepted below it are
never refused by it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.config import GatewaySettings
from gateway.errors import GatewayError
from gateway.http import zerocopy

log = logging.getLogger("uvicorn.error")

# After a refusal the socket stays open this long, reading and dropping what the client is
# still sending: closing a socket with unread data makes the kernel send a reset, and the
# client would lose the 431 it is about to read (the "lingering close" of Apache and nginx).
LINGER_SECONDS = 2.0
# Refusals are logged at most this often (with a count): an attack must not flood the log.
LOG_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int = 1000
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout: float = 10.0
    body_timeout: float = 30.0

    @classmethod
    def from_settings(cls, gateway: GatewaySettings) -> ServerLimits:
        return cls(
            max_connections=gateway.max_connections,
            max_header_bytes=gateway.max_header_bytes,
            max_headers=gateway.max_headers,
            header_timeout=gateway.header_timeout_seconds,
            body_timeout=gateway.body_timeout_seconds,
        )


class _ThrottledLog:
    """One WARNING per kind of refusal per LOG_EVERY_SECONDS, counting the ones in between."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, kind: str, message: str) -> None:
        self._count[kind] = self._count.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            more = self._count[kind] - 1
            log.warning("%s (and %d more since the last such line)" if more else "%s", message,
                        *([more] if more else []))  # fmt: skip
            self._last[kind], self._count[kind] = now, 0


_refusals = _ThrottledLog()


def error_body(status: int, name: str, message: str, *, v2: bool) -> bytes:
    """A Stability-shaped error body, for answers written before any ASGI app runs."""
    error = GatewayError(message, name=name, status=status)
    return json.dumps(error.body(uuid.uuid4().hex, v2=v2)).encode()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header, time and connection bounds, and ASGI's
    zero-copy send for answers sent from a file (gateway.http.zerocopy).

    The limits come from `config.server_limits` (a ServerLimits), set by `serve`. Header
    bytes are bounded by never feeding the parser more than what is left of the bound while
    a request's headers are incomplete, so httptools never buffers more than that either.
    Bytes fed after one request ends and the next begins, in the same read, are not counted:
    a pipelined request may have up to twice the bound, still bounded.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ServerLimits = getattr(config, "server_limits", None) or ServerLimits()
        # uvicorn's own check answers a plain-text 503 at the request; ours is per connection.
        self.limit_concurrency = None
        self.url = b""
        self._over_bound = False
        self._in_headers = False  # a request has begun and its headers are not complete
        self._in_body = False  # its headers are complete and its body is not
        self._header_bytes = 0
        self._header_count = 0
        self._too_many_headers = False
        self._refusing = False  # an error has been written: what still arrives is dropped
        self._header_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._over_bound = len(self.connections) > self.limits.max_connections
        if self._over_bound:
            _refusals.warn(
                "busy",
                f"{len(self.connections) - 1} connections open, at the bound of "
                f"[gateway] max_connections = {self.limits.max_connections}: "
                "new connections are answered 503",
            )
        # From the connection's start: one that never sends a byte is closed too.
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._header_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while data:
            if self._refusing or self.transport.is_closing():
                return  # lingering after a refusal: drop what is still arriving
            if self._in_body:
                super().data_received(data)
                return
            room = self.limits.max_header_bytes - self._header_bytes
            piece, data = data[:room], data[room:]
            self._header_bytes += len(piece)
            super().data_received(piece)
            if self.parser is None or self.transport.is_closing():
                return
            if self._refusing:
                return
            if self._too_many_headers:
                self._refuse_headers(f"more than {self.limits.max_headers} header fields")
                return
            if self._in_headers and self._header_bytes >= self.limits.max_header_bytes:
                self._refuse_headers(
                    f"the request line and headers exceed {self.limits.max_header_bytes} bytes"
                )
                return

    def send_400_response(self, msg: str) -> None:
        """uvicorn answers unparsable requests in plain text; answer in Stability's shape."""
        self._refuse(400, "bad_request", "the request is not valid HTTP/1.1")

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers, self._header_count = True, 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._too_many_headers = True  # answered once the parser returns; none kept
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._in_headers = False
        if self._refusing or self._too_many_headers:
            return  # no app is started for a refused request
        self._in_body = True
        zerocopy.offer(cast(Scope, self.scope))
        cycle = self.cycle
        if not self._over_bound:
            super().on_headers_complete()
        else:
            app, self.app = self.app, _too_many_connections(self.limits.max_connections)
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        if self.cycle is not cycle:  # uvicorn made this request's cycle: before its app runs
            zerocopy.install(self.cycle)

    def on_body(self, body: bytes) -> None:
        if not (self._refusing or self._too_many_headers):
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusing or self._too_many_headers:
            return
        self._in_body, self._header_bytes = False, 0
        super().on_message_complete()

    # -- refusals --------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout, self._header_timed_out
        )

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self._refusing:
            return
        if not self._in_headers:  # nothing sent yet on a new connection
            self.transport.close()
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request behind one still being answered: uvicorn stops reading
            # until that answer is out, so the rest of these headers cannot arrive yet.
            self._arm_header_timer()
            return
        _refusals.warn(
            "slow",
            f"closed a connection whose headers took more than "
            f"[gateway] header_timeout_seconds = {self.limits.header_timeout:g}",
        )
        self._refuse(
            408,
            "request_timeout",
            f"the request headers did not arrive within {self.limits.header_timeout:g} s",
        )

    def _refuse_headers(self, why: str) -> None:
        _refusals.warn("headers", f"refused a request with 431: {why}")
        self._refuse(431, "request_header_fields_too_large", why)

    def _refuse(self, status: int, name: str, message: str) -> None:
        """Write a Stability-shaped error with `connection: close`, then linger and close."""
        self._refusing = True
        if self.transport.is_closing():
            return
        body = error_body(status, name, message, v2=self.url.startswith(b"/v2beta/"))
        head = [STATUS_LINE[status]]
        for key, value in self.server_state.default_headers:
            head += [key, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:  # pragma: no cover - TCP transports can
            self.transport.close()


def _too_many_connections(bound: int) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        error = GatewayError(
            f"the gateway is at its bound of {bound} open connections; try again shortly",
            name="too_many_connections",
            status=503,
            headers={"Retry-After": "1", "Connection": "close"},
        )
        await error.response(v2=scope["path"].startswith("/v2beta/"))(scope, receive, send)

    return app


class RequestTimeout(GatewayError):
    status = 408
    name = "request_timeout"


class BodyTimeout:
    """Pure ASGI middleware: a request body that sends nothing for `seconds` is a 408.

    The timeout is raised from `receive`, where the app reads the body, so the app answers
    it like any other GatewayError (the body-size limit works the same way); the answer
    closes the connection. After the body is complete `receive` is not timed: the gateway
    waits on it for the caller's disconnect while the upstream works.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False
        timed_out = False

        async def timed_receive() -> Message:
            nonlocal body_done, timed_out
            if body_done:
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                _refusals.warn(
                    "slow_body",
                    f"refused a request whose body sent nothing for "
                    f"[gateway] body_timeout_seconds = {self.seconds:g}",
                )
                raise RequestTimeout(
                    f"the request body sent nothing for {self.seconds:g} s"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def closing_send(message: Message) -> None:
            if timed_out and message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, timed_receive, closing_send)
