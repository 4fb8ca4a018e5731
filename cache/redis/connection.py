"""One Redis connection pool per process, the prefix every key lives under, and the
translation of redis-py's exceptions into the interfaces' StoreError / CoordinationError.

Timeouts are short and redis-py retries a command once, at once (a pooled connection that
broke when Redis restarted is replaced on that retry): while Redis is away, a request that
needs it fails within a connect timeout rather than after redis-py's default backoff, and
once Redis is back the next command simply works (nothing here holds state that would need
a restart).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from cache.interfaces import CoordinationError, StoreError

if TYPE_CHECKING:
    from cache.redis.listener import Listener

DEFAULT_PREFIX = "stability-gateway:"
CONNECT_TIMEOUT_SECONDS = 2.0
SOCKET_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 64


def redact(url: str) -> str:
    """The URL without its password (for logs, /healthz and error messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:***@" if parts.username else ":***@"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def describe(exc: BaseException) -> str:
    """A short reason an operator recognises."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ResponseError) and text.startswith("OOM"):
        return "Redis is out of memory (maxmemory reached)"
    if "NOAUTH" in text or "WRONGPASS" in text or "invalid password" in text:
        return "Redis refused the password (STABILITY_GATEWAY_REDIS_PASSWORD or the URL)"
    return text


class RedisConnection:
    """The client (a connection pool, bound to the event loop that first uses it), the
    key prefix, and `where` for messages (the URL, password redacted)."""

    def __init__(self, url: str, *, password: str = "", prefix: str = DEFAULT_PREFIX) -> None:
        self.url = url
        self.where = redact(url)
        self.prefix = prefix
        # A blocking pool: past MAX_CONNECTIONS commands under way, the next one waits for
        # a connection (up to the socket timeout) instead of failing at once.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            password=password or None,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=SOCKET_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 1),
            max_connections=MAX_CONNECTIONS,
            timeout=SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
        )
        self.client: aioredis.Redis = aioredis.Redis(connection_pool=pool)
        self._users = 0
        self._closed = False
        self._listener: Listener | None = None

    @property
    def listener(self) -> Listener:
        """This process's one pub/sub subscription (see cache.redis.listener)."""
        if self._listener is None:
            from cache.redis.listener import Listener

            self._listener = Listener(self)
        return self._listener

    def key(self, *parts: str) -> str:
        """`prefix` + parts joined by ':' (every key this backend writes)."""
        return self.prefix + ":".join(parts)

    def share(self) -> RedisConnection:
        """Count one more user (entry store, coordinator): the pool closes with the last."""
        self._users += 1
        return self

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False

    async def close(self) -> None:
        self._users -= 1
        if self._users <= 0 and not self._closed:
            self._closed = True
            if self._listener is not None:
                await self._listener.close()
            await self.client.aclose()
            await self.client.connection_pool.disconnect()

    @contextlib.contextmanager
    def store_errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreError(describe(exc), where=self.where) from exc

    @contextlib.contextmanager
    def coordination_errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise CoordinationError(describe(exc), where=self.where) from exc
