"""RedisCoordinator: what every replica agrees on, in one Redis.

    <prefix>lease:<name>        the holder's token, SET NX PX; renewed and released by Lua
                                scripts that check the token first
    <prefix>released            pub/sub channel: the name of every lease released
    <prefix>record:<kind>:<id>  JSON with a TTL (jobs, accepted credentials' hashes)
    <prefix>counts              hash of event counters (HINCRBYFLOAT), summed over replicas
    <prefix>within:<name>       an `add_within` counter (a float with the counter's TTL)
    <prefix>ledger...           the credits ledger (cache.redis.ledger)
    <prefix>ratelimit:*         the shared rate limit (cache.redis.ratelimit)

A request that finds a lease taken waits for the release message, or for the moment the
lease would expire if its holder stopped renewing it (its PTTL), whichever comes first:
no polling, and a holder that died (`kill -9`) is replaced as soon as its lease runs out.

`fails_closed` is True: without Redis there is no shared limit and no shared lease, so the
fetch path refuses to call the upstream (503 coordination_unavailable) rather than risk
calls nobody counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cache.interfaces import LedgerPage, LedgerQuery, LedgerRecord, RateLimiter
from cache.redis.connection import RedisConnection
from cache.redis.ledger import RedisLedger
from cache.redis.ratelimit import RedisRateLimiter

log = logging.getLogger("cache.redis")

# How often a waiter looks for itself while the subscription is down (it cannot hear
# releases then): rare, and only until the subscription is back.
UNSUBSCRIBED_CHECK_SECONDS = 0.25
EXPIRY_SLACK_SECONDS = 0.005

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('DEL', KEYS[1])
    redis.call('PUBLISH', KEYS[2], ARGV[2])
    return 1
end
return 0
"""

# A counter that never passes its cap; created with its TTL, which later additions keep
# (a budget is for one day, not for a day since the last request).
ADD_WITHIN = """
local amount = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if amount > 0 and current + amount > tonumber(ARGV[2]) then
    return 0
end
local existed = redis.call('EXISTS', KEYS[1])
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if existed == 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisCoordinator:
    fails_closed = True

    def __init__(
        self,
        connection: RedisConnection,
        *,
        limit: int,
        period: float,
        margin: float = 0.0,
        max_wait: float = 60.0,
    ) -> None:
        self.connection = connection.share()
        self.where = connection.where
        self.client = connection.client
        self.limiter: RateLimiter = RedisRateLimiter(
            connection, limit=limit, period=period, margin=margin, max_wait=max_wait
        )
        self.ledger = RedisLedger(connection)
        self._renew = self.client.register_script(RENEW)
        self._release = self.client.register_script(RELEASE)
        self._add_within = self.client.register_script(ADD_WITHIN)
        self._released_channel = connection.key("released")
        self._waiters: dict[str, set[asyncio.Event]] = {}
        listener = connection.listener
        listener.on(self._released_channel, self._on_released)
        listener.on_reset(self._wake_everyone)

    def _lease(self, name: str) -> str:
        return self.connection.key("lease", name)

    # -- leases ---------------------------------------------------------------------------

    async def acquire_lease(self, name: str, token: str, ttl: float) -> bool:
        with self.connection.coordination_errors():
            return bool(await self.client.set(self._lease(name), token, nx=True, px=_ms(ttl)))

    async def renew_lease(self, name: str, token: str, ttl: float) -> bool:
        with self.connection.coordination_errors():
            return bool(await self._renew(keys=[self._lease(name)], args=[token, _ms(ttl)]))

    async def release_lease(self, name: str, token: str) -> None:
        with self.connection.coordination_errors():
            await self._release(
                keys=[self._lease(name), self._released_channel], args=[token, name]
            )

    def _on_released(self, name: str) -> None:
        for event in self._waiters.get(name, ()):
            event.set()

    def _wake_everyone(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def wait_released(self, name: str, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        listening = await self.connection.listener.start()
        while True:
            event = asyncio.Event()
            self._waiters.setdefault(name, set()).add(event)
            try:
                # Subscribed (and registered) first, then looked: a release in between
                # is heard, not missed.
                with self.connection.coordination_errors():
                    pttl = int(await self.client.pttl(self._lease(name)))
                remaining = deadline - loop.time()
                if pttl == -2 or remaining <= 0:
                    return
                wait = remaining if pttl < 0 else min(remaining, pttl / 1000 + EXPIRY_SLACK_SECONDS)
                if not listening:
                    wait = min(wait, UNSUBSCRIBED_CHECK_SECONDS)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)
            finally:
                waiting = self._waiters.get(name)
                if waiting is not None:
                    waiting.discard(event)
                    if not waiting:
                        del self._waiters[name]
            listening = self.connection.listener.subscribed

    # -- records and counters -------------------------------------------------------------

    async def remember(self, kind: str, ident: str, value: Mapping[str, Any], ttl: float) -> None:
        text = json.dumps(dict(value), separators=(",", ":"))
        with self.connection.coordination_errors():
            await self.client.set(self.connection.key("record", kind, ident), text, px=_ms(ttl))

    async def recall(self, kind: str, ident: str) -> dict[str, Any] | None:
        with self.connection.coordination_errors():
            raw = await self.client.get(self.connection.key("record", kind, ident))
        if raw is None:
            return None
        value = json.loads(raw)
        return value if isinstance(value, dict) else None

    async def add_counts(self, counts: Mapping[str, float]) -> None:
        if not counts:
            return
        key = self.connection.key("counts")
        with self.connection.coordination_errors():
            async with self.client.pipeline(transaction=True) as pipe:
                for name, amount in counts.items():
                    pipe.hincrbyfloat(key, name, float(amount))
                await pipe.execute()

    async def counts(self) -> dict[str, float]:
        with self.connection.coordination_errors():
            raw = await self.client.hgetall(self.connection.key("counts"))
        return {_text(name): float(value) for name, value in raw.items()}

    async def add_within(self, name: str, amount: float, cap: float, ttl: float) -> bool:
        with self.connection.coordination_errors():
            added = await self._add_within(
                keys=[self.connection.key("within", name)],
                args=[repr(float(amount)), repr(float(cap)), _ms(ttl)],
            )
        return bool(added)

    async def value(self, name: str) -> float:
        with self.connection.coordination_errors():
            raw = await self.client.get(self.connection.key("within", name))
        return 0.0 if raw is None else float(raw)

    async def append_ledger(self, records: Sequence[LedgerRecord]) -> None:
        if records:
            with self.connection.coordination_errors():
                await self.ledger.append(records)

    async def query_ledger(self, query: LedgerQuery) -> LedgerPage:
        with self.connection.coordination_errors():
            return await self.ledger.query(query)

    async def close(self) -> None:
        if isinstance(self.limiter, RedisRateLimiter) and self.limiter.transactions:
            log.info(
                "rate limiter: %d changes committed, %d made again after another replica's "
                "change (contention retries)",
                self.limiter.transactions, self.limiter.retries,
            )  # fmt: skip
        await self.connection.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
