"""The upstream client: one logical call = rate limit + retries around httpx.

The transport is the seam: `UpstreamClient(settings, limiter, transport=...)` takes any
`httpx.AsyncBaseTransport`, so tests hand it `httpx.MockTransport` or respx, and the real
gateway uses httpx's default.

What is retried (tenacity, exponential backoff with jitter, the upstream's Retry-After
honoured): 429, 500, 502, 503, 504, connection errors and timeouts before the request was
sent, including a connection that breaks in the middle of the answer. A read timeout (the
request was sent whole, no answer came) is retried only with `retry_read_timeouts`: the
image may have been generated and charged. Every attempt passes the shared limiter again.
What is not retried: every other status (400 invalid_prompts, 401, 403 content_moderation,
404...) comes back to the caller as the upstream sent it, after one call.

Forwarded requests (`UpstreamRequest.forwarded`, the routes the gateway only passes on) are
sent byte for byte and come back unread, so their body can be streamed to the caller: the
retry decision needs only the status line, and a retryable answer's (short) body is read
and dropped before the next attempt.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookiejar
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpcore
import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from cache.interfaces import ANONYMOUS, CoordinationError, QueueFull, RateLimiter, Slot, Ticket
from gateway.config import Settings
from gateway.credits import Attempt
from gateway.deadline import Deadline
from gateway.errors import (
    CoordinationUnavailable,
    GatewayTimeout,
    RateLimited,
    UpstreamError,
    UpstreamUnavailable,
)
from gateway.generation import UpstreamRequest

log = logging.getLogger("gateway.upstream")

RETRY_AFTER_FLOOR_SECONDS = 60.0
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Caller headers worth forwarding: they identify the client to Stability, change nothing
# about the image, and carry no secret.
FORWARDED_HEADERS = ("organization", "stability-client-id", "stability-client-version")


class RetryableStatus(Exception):
    """An upstream answer worth another attempt; carries the response for the last one."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"upstream answered {response.status_code}")
        self.response = response


def retry_after_seconds(
    response: httpx.Response, ceiling: float, now: float | None = None
) -> float | None:
    """The upstream's Retry-After in seconds (delta-seconds or an HTTP date), at most
    `ceiling`.

    Bounded because it becomes a cool-down shared by every caller: a stray
    `Retry-After: 86400` (or `inf`, or a date next year) must not freeze the gateway for a day.
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), ceiling)


def coordination_unavailable(exc: CoordinationError) -> CoordinationUnavailable:
    """The 503 for a call the shared limiter cannot count: it fails closed."""
    return CoordinationUnavailable(
        f"the shared rate limit ({exc.where}) cannot be reached ({exc}): no upstream call is "
        "made that it cannot count; retry shortly"
    )


def queue_full(exc: QueueFull) -> RateLimited:
    """The gateway's own 429 for a request whose turn is too far away."""
    retry_after = max(1, math.ceil(exc.wait - exc.max_wait))
    return RateLimited(
        f"the shared upstream rate limit queue is full: the next send slot is {exc.wait:.1f} s "
        f"away, more than the {exc.max_wait:g} s a request may wait; retry after "
        f"{retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


@dataclass(frozen=True)
class UpstreamAnswer:
    """The final upstream response and the attempts it took."""

    response: httpx.Response
    tries: Sequence[Attempt]

    @property
    def attempts(self) -> int:
        return len(self.tries)


class Observer(Protocol):
    """Where the client reports what it does (the metrics)."""

    def attempt(self, route: str, status: str, seconds: float) -> None: ...

    def retry(self, reason: str) -> None: ...

    def queued(self, delta: int) -> None: ...

    def waited(self, seconds: float) -> None: ...

    def sent_late(self) -> None: ...


class _Unobserved:
    def attempt(self, route: str, status: str, seconds: float) -> None:
        pass

    def retry(self, reason: str) -> None:
        pass

    def queued(self, delta: int) -> None:
        pass

    def waited(self, seconds: float) -> None:
        pass

    def sent_late(self) -> None:
        pass


# httpcore's trace events for "the whole request has been written to the socket".
WRITTEN_EVENTS = frozenset(
    {"http11.send_request_body.complete", "http2.send_request_body.complete"}
)
# A request written more than this share of the margin after its slot was granted is
# counted by the limiter from when it was written: the rest of the margin is the network's.
LATE_SHARE_OF_MARGIN = 0.25

# Transport errors that mean the request never reached the upstream (so it cost nothing).
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _as_sent(value: str) -> bytes:
    """A caller's header value as the bytes it sent: Starlette decodes headers as latin-1,
    and httpx would encode a str as ASCII, failing on anything else."""
    return value.encode("latin-1")


# httpcore reads an HTTP/1.1 answer 64 KiB per socket read, each read a trip through h11
# and the event loop; an answer here is a 3.5 MB JSON body. Measured (client-thread CPU
# per 3.5 MB answer from a loopback server): 8.4 ms at 64 KiB, 4.3 ms at 256 KiB, 4.5 at
# 1 MiB. A class attribute (httpcore has no per-client setting; its maintainers raised it
# from 4 KiB to 64 KiB the same way, encode/httpcore#135): tests check it still exists.
UPSTREAM_READ_BYTES = 256 * 1024


def read_in_bigger_pieces() -> None:
    """Raise httpcore's socket read size for every HTTP/1.1 connection of this process."""
    connection = httpcore.AsyncHTTP11Connection
    current = getattr(connection, "READ_NUM_BYTES", None)
    if isinstance(current, int):  # else a renamed attribute: leave httpcore as it is
        connection.READ_NUM_BYTES = max(current, UPSTREAM_READ_BYTES)


def refusing_cookies() -> http.cookiejar.CookieJar:
    """A cookie jar that keeps nothing. httpx's client keeps every cookie an answer sets and
    sends it with every later request: here that would carry a cookie Stability (or its
    CDN) set on one caller's call into every other caller's calls. Callers' own cookies
    are not forwarded either (`headers_for`)."""
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class UpstreamClient:
    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_attempt: Callable[[], None] = lambda: None,
        observer: Observer | None = None,
        on_free_call: Callable[[UpstreamRequest, Sequence[Attempt]], None] = lambda r, t: None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.on_attempt = on_attempt
        self.observer: Observer = observer or _Unobserved()
        self.on_free_call = on_free_call
        t = settings.timeouts
        read_in_bigger_pieces()
        self.http = httpx.AsyncClient(
            base_url=settings.gateway.upstream_url,
            cookies=refusing_cookies(),
            transport=transport,
            timeout=httpx.Timeout(t.read_seconds, connect=t.connect_seconds),
            # Keep every connection a burst opened: with fewer kept, each window's burst
            # would open (and handshake) the rest again between its grants and its writes.
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
            follow_redirects=False,
        )
        self.late_after = settings.rate_limit.margin_seconds * LATE_SHARE_OF_MARGIN
        self._restamping: set[asyncio.Future[None]] = set()
        r = settings.retry
        self._backoff = wait_exponential(
            multiplier=r.backoff_initial_seconds, max=r.backoff_max_seconds
        ) + wait_random(0, r.jitter_seconds)

    async def aclose(self) -> None:
        await asyncio.gather(*self._restamping, return_exceptions=True)
        await self.http.aclose()

    def headers_for(self, caller: Mapping[str, str], accept: str) -> dict[str, str | bytes]:
        """The gateway's own key if it has one, else the caller's Authorization."""
        headers: dict[str, str | bytes] = {"accept": accept}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        elif "authorization" in caller:
            headers["authorization"] = _as_sent(caller["authorization"])
        for name in FORWARDED_HEADERS:
            if name in caller:
                headers[name] = _as_sent(caller[name])
        return headers

    @property
    def retry_after_ceiling(self) -> float:
        """The longest Retry-After honoured: a minute (Stability's own time-out), or the
        configured cool-down or backoff cap when longer."""
        return max(
            RETRY_AFTER_FLOOR_SECONDS,
            self.settings.rate_limit.cooldown_seconds,
            self.settings.retry.backoff_max_seconds,
        )

    def _pause_after_429(self, response: httpx.Response) -> float:
        """How long every caller waits after an upstream 429: its Retry-After (0 included),
        else the configured cool-down (Stability promises no Retry-After)."""
        after = retry_after_seconds(response, self.retry_after_ceiling)
        return self.settings.rate_limit.cooldown_seconds if after is None else after

    async def _cool_down(self, seconds: float) -> None:
        """Hold every caller back; if the shared limiter cannot be written, the next
        acquire fails closed anyway, so this only logs."""
        try:
            await self.limiter.cool_down(seconds)
        except CoordinationError as exc:
            log.error("%s: could not record a %.1f s cool-down (%s)", exc.where, seconds, exc)

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RetryableStatus):
            return True
        if isinstance(exc, httpx.ReadTimeout):
            return self.settings.retry.retry_read_timeouts
        return isinstance(exc, httpx.TransportError)

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableStatus):
            after = retry_after_seconds(exc.response, self.retry_after_ceiling)
            if after is not None:
                return after
        return float(backoff)

    async def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        attempt = state.attempt_number
        reason = (
            str(exc.response.status_code) if isinstance(exc, RetryableStatus)
            else type(exc).__name__
        )  # fmt: skip
        self.observer.retry(reason)
        if isinstance(exc, RetryableStatus) and exc.response.status_code == 429:
            pause = self._pause_after_429(exc.response)
            await self._cool_down(pause)
            # The retry passes the limiter, which now holds every caller for `pause`: say
            # when it will really go, not just tenacity's own wait.
            log.warning(
                "rate limit exceeded (429), retrying in %.1f s (attempt %d); every upstream "
                "call paused for %.1f s",
                max(delay, pause), attempt, pause,
            )  # fmt: skip
        elif isinstance(exc, RetryableStatus):
            log.warning(
                "upstream answered %d, retrying in %.1f s (attempt %d)",
                exc.response.status_code, delay, attempt,
            )  # fmt: skip
        else:
            log.warning(
                "upstream %s (%s), retrying in %.1f s (attempt %d)",
                type(exc).__name__, exc, delay, attempt,
            )  # fmt: skip

    async def send(
        self,
        request: UpstreamRequest,
        caller_headers: Mapping[str, str],
        *,
        deadline: Deadline,
        ticket: Ticket = ANONYMOUS,
        on_send: Callable[[], None] = lambda: None,
        tries: list[Attempt] | None = None,
    ) -> UpstreamAnswer:
        """The final upstream response (2xx, a non-retryable error, or the last retryable
        one) and the attempts it took. Raises RateLimited when the queue is too long,
        UpstreamUnavailable/GatewayTimeout when no answer came, and the deadline's 504 when
        it passes. `on_send` is called just before each attempt goes out (after the limiter).
        Every attempt is appended to `tries` as it happens, so a caller learns what was sent
        (and may have been charged) even when this raises."""
        own = tries is None
        tries = [] if tries is None else tries
        try:
            async with deadline.enforced():
                return await self._send(request, caller_headers, ticket, on_send, tries)
        finally:
            if own and tries:  # a call nobody prices (account, engines, results): free
                self.on_free_call(request, tries)

    async def _attempt(
        self,
        request: UpstreamRequest,
        headers: dict[str, str | bytes],
        tries: list[Attempt],
        slot: Slot,
    ) -> httpx.Response:
        """One attempt, recorded: no answer counts as possibly charged unless the
        connection was never made."""
        route = request.route or request.path.split("?")[0].lstrip("/")
        started = time.monotonic()
        tries.append(Attempt(None, sent=True))
        try:
            response = await self._request(request, headers, {"trace": self._on_written(slot)})
        except BaseException as exc:
            sent = not isinstance(exc, NOT_SENT_ERRORS)
            tries[-1] = Attempt(None, sent=sent)
            label = "timeout" if isinstance(exc, httpx.TimeoutException | TimeoutError) else "error"
            self.observer.attempt(route, label, time.monotonic() - started)
            raise
        tries[-1] = Attempt(response.status_code)
        self.observer.attempt(route, str(response.status_code), time.monotonic() - started)
        return response

    def _on_written(self, slot: Slot) -> Callable[[str, Any], Awaitable[None]]:
        """httpcore's trace hook: when the request has been written, if that was late after
        its slot was granted, have the limiter count the send from then (in the background:
        the answer does not wait for it)."""

        async def trace(event: str, info: Any) -> None:
            if event not in WRITTEN_EVENTS:
                return
            late = time.monotonic() - slot.granted
            if late > self.late_after:
                self.observer.sent_late()
                restamping = asyncio.ensure_future(self._restamp(slot, late))
                self._restamping.add(restamping)
                restamping.add_done_callback(self._restamping.discard)

        return trace

    async def _restamp(self, slot: Slot, late: float) -> None:
        try:
            await self.limiter.restamp(slot, late)
        except CoordinationError as exc:
            log.error("%s: could not count a late send from when it left (%s)", exc.where, exc)
            return
        log.info("a request went upstream %.0f ms after its send slot was granted: the rate "
                 "limit counts it from then", 1000 * late)  # fmt: skip

    async def _acquire(self, ticket: Ticket) -> Slot:
        self.observer.queued(1)
        try:
            slot = await self.limiter.acquire(ticket)
        except QueueFull as exc:
            raise queue_full(exc) from None
        except CoordinationError as exc:  # a shared limiter that fails closed (Redis)
            raise coordination_unavailable(exc) from exc
        finally:
            self.observer.queued(-1)
        self.observer.waited(slot.waited)
        return slot

    async def _send(
        self,
        request: UpstreamRequest,
        caller_headers: Mapping[str, str],
        ticket: Ticket,
        on_send: Callable[[], None],
        tries: list[Attempt],
    ) -> UpstreamAnswer:
        headers = self.headers_for(caller_headers, request.accept)
        attempts = self.settings.retry.attempts
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        made = 0
        try:
            async for attempt in retrying:
                with attempt:
                    slot = await self._acquire(ticket)
                    made += 1
                    self.on_attempt()
                    on_send()
                    response = await self._attempt(request, headers, tries, slot)
                    if response.status_code in RETRY_STATUSES:
                        if request.forwarded:  # a short error body: read it (and free the
                            await response.aread()  # connection) so the last can be passed on
                        raise RetryableStatus(response)
                    return UpstreamAnswer(response, list(tries))
        except RetryableStatus as exc:
            if exc.response.status_code == 429:
                await self._cool_down(self._pause_after_429(exc.response))
            log.warning(
                "upstream answered %d after %d attempts; giving up",
                exc.response.status_code, made,
            )  # fmt: skip
            return UpstreamAnswer(exc.response, list(tries))
        except httpx.DecodingError as exc:
            raise UpstreamError(f"upstream sent a body that could not be decoded ({exc})") from exc
        except httpx.ReadTimeout as exc:
            retried = (
                ""
                if self._retryable(exc)
                else (
                    "; not retried: the request was sent whole, so the image may have been "
                    "generated and charged (retry_read_timeouts = false)"
                )
            )
            raise GatewayTimeout(
                f"the upstream did not answer within the {self.settings.timeouts.read_seconds:g}"
                f" s read timeout after {made} attempt{'s' if made != 1 else ''} "
                f"(ReadTimeout){retried}",
                name="upstream_timeout",
            ) from exc
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(
                f"the upstream did not answer in time after {made} attempts ({type(exc).__name__})",
                name="upstream_timeout",
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(
                f"could not reach the upstream after {made} attempts ({type(exc).__name__})"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(
        self,
        request: UpstreamRequest,
        headers: dict[str, str | bytes],
        extensions: dict[str, Any],
    ) -> httpx.Response:
        if request.forwarded:
            return await self._forward(request, headers, extensions)
        kwargs: dict[str, Any] = {"headers": headers, "extensions": extensions}
        if request.json is not None:
            kwargs["json"] = request.json
        if request.data is not None:
            kwargs["data"] = request.data
        if request.files is not None:
            kwargs["files"] = request.files
        return await self.http.request(request.method, request.path, **kwargs)

    async def _forward(
        self,
        request: UpstreamRequest,
        headers: dict[str, str | bytes],
        extensions: dict[str, Any],
    ) -> httpx.Response:
        """A caller's request as sent, its answer left unread (streamed by the caller).

        The raw path and query are appended to the upstream URL's own path, byte for byte:
        httpx would read a path starting `//` as another host, and re-quote a query. Headers
        httpx adds on its own (Accept, Accept-Encoding) are dropped when the caller sent none,
        so that the upstream sees what the caller sent and answers an uncompressed body
        unless the caller asked for a compressed one (which is then passed on as sent)."""
        base = self.http.base_url
        raw_path = base.raw_path + request.path.lstrip("/").encode("ascii")
        sent: dict[str, str | bytes] = {**headers, **request.headers}
        if request.content_type:
            sent["content-type"] = _as_sent(request.content_type)
        raw = [(k.encode("latin-1"), v if isinstance(v, bytes) else _as_sent(v))
               for k, v in sent.items() if v]  # fmt: skip
        built = self.http.build_request(
            request.method, base.copy_with(raw_path=raw_path), headers=raw,
            content=request.content, extensions=extensions,
        )  # fmt: skip
        for name in ("accept", "accept-encoding"):
            if not sent.get(name) and name in built.headers:
                del built.headers[name]
        return await self.http.send(built, stream=True)
