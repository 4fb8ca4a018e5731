"""The upstream client: one logical call = rate limit + retries around httpx.

The transport is the seam: `UpstreamClient(settings, limiter, transport=...)` takes any
`httpx.AsyncBaseTransport`, so tests hand it `httpx.MockTransport` or respx, and the real
gateway uses httpx's default.

What is retried (tenacity, exponential backoff with jitter, the upstream's Retry-After
honoured): 429, 500, 502, 503, 504, timeouts and connection errors, including a
connection that breaks in the middle of the body. Every attempt passes the shared limiter
again. What is not: every other status (400 invalid_prompts, 401, 403 content_moderation,
404...) comes back to the caller as the upstream sent it, after one call.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from gateway.config import Settings
from gateway.errors import GatewayTimeout, UpstreamError, UpstreamUnavailable
from gateway.generation import UpstreamRequest
from gateway.ratelimit import RateLimiter

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


def retry_after_seconds(response: httpx.Response, ceiling: float) -> float | None:
    """The upstream's Retry-After in seconds, at most `ceiling`.

    Bounded because it becomes a cool-down stored on disk for every caller: a stray
    `Retry-After: 86400` (or `inf`) must not freeze the gateway, across restarts, for a day.
    """
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from Stability; fall back to our own backoff
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), ceiling)


def _as_sent(value: str) -> bytes:
    """A caller's header value as the bytes it sent: Starlette decodes headers as latin-1,
    and httpx would encode a str as ASCII, failing on anything else."""
    return value.encode("latin-1")


class UpstreamClient:
    def __init__(
        self,
        settings: Settings,
        limiter: RateLimiter,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_attempt: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.limiter = limiter
        self.on_attempt = on_attempt
        t = settings.timeouts
        self.http = httpx.AsyncClient(
            base_url=settings.gateway.upstream_url,
            transport=transport,
            timeout=httpx.Timeout(t.read_seconds, connect=t.connect_seconds),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
        )
        r = settings.retry
        self._backoff = wait_exponential(
            multiplier=r.backoff_initial_seconds, max=r.backoff_max_seconds
        ) + wait_random(0, r.jitter_seconds)

    async def aclose(self) -> None:
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

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableStatus):
            after = retry_after_seconds(exc.response, self.retry_after_ceiling)
            if after is not None:
                return after
        return backoff

    async def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        attempt = state.attempt_number
        if isinstance(exc, RetryableStatus) and exc.response.status_code == 429:
            pause = self._pause_after_429(exc.response)
            await self.limiter.cool_down(pause)
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
        on_send: Callable[[], None] = lambda: None,
    ) -> httpx.Response:
        """Returns the final upstream response (2xx, a non-retryable error, or the last
        retryable one); raises UpstreamUnavailable/GatewayTimeout when no answer came.
        `on_send` is called just before each attempt goes out (after the limiter)."""
        deadline = self.settings.timeouts.deadline_seconds
        try:
            async with asyncio.timeout(deadline):
                return await self._send(request, caller_headers, on_send)
        except TimeoutError:
            raise GatewayTimeout(
                f"the upstream did not answer within the {deadline:g} s deadline",
                name="upstream_timeout",
            ) from None

    async def _send(
        self,
        request: UpstreamRequest,
        caller_headers: Mapping[str, str],
        on_send: Callable[[], None],
    ) -> httpx.Response:
        headers = self.headers_for(caller_headers, request.accept)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.retry.attempts),
            wait=self._wait,
            retry=retry_if_exception_type((RetryableStatus, httpx.TransportError)),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self.limiter.acquire()
                    self.on_attempt()
                    on_send()
                    response = await self._request(request, headers)
                    if response.status_code in RETRY_STATUSES:
                        raise RetryableStatus(response)
                    return response
        except RetryableStatus as exc:
            if exc.response.status_code == 429:
                await self.limiter.cool_down(self._pause_after_429(exc.response))
            log.warning(
                "upstream answered %d after %d attempts; giving up",
                exc.response.status_code, self.settings.retry.attempts,
            )  # fmt: skip
            return exc.response
        except httpx.DecodingError as exc:
            raise UpstreamError(f"upstream sent a body that could not be decoded ({exc})") from exc
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(
                f"the upstream did not answer in time after {self.settings.retry.attempts} "
                f"attempts ({type(exc).__name__})",
                name="upstream_timeout",
            ) from exc
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(
                f"could not reach the upstream after {self.settings.retry.attempts} attempts "
                f"({type(exc).__name__})"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request(self, request: UpstreamRequest, headers: dict[str, str]) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": headers}
        if request.json is not None:
            kwargs["json"] = request.json
        if request.data is not None:
            kwargs["data"] = request.data
        if request.files is not None:
            kwargs["files"] = request.files
        return await self.http.request(request.method, request.path, **kwargs)

    async def passthrough(
        self, method: str, path: str, caller_headers: Mapping[str, str], query: str = ""
    ) -> httpx.Response:
        """A plain call for the account/engine routes: limited and retried like the rest."""
        return await self.send(
            UpstreamRequest(method, path + (f"?{query}" if query else "")), caller_headers
        )
