"""The shared upstream rate limit: a fair queue of reserved send times.

Two backends, one interface (`acquire`, `cool_down`):

- `DiskRateLimiter` (default) keeps a sliding log of the last `limit` reserved send times
  in the cache folder's diskcache, updated in one SQLite transaction per reservation, so
  every worker process on the host shares it. A caller reserves the earliest time at which
  the window it would open holds fewer than `limit` sends; reservations are made in arrival
  order and never move, so the queue is first-come first-served, and any `limit + 1`
  consecutive sends are at least `period + margin` apart. The margin absorbs the jitter
  between our clock and the upstream's arrival stamps.
- `MemoryRateLimiter` uses aiolimiter, pacing sends evenly at `limit / (period + margin)`;
  one process only (aiolimiter's bucket lets a full burst through and then refills, so
  evenly paced is the only setting that keeps every window under the limit).

Waiting is async. A caller whose reserved time is further away than `max_wait` gets
RateLimited (the gateway's own 429 with Retry-After) and reserves nothing. A caller that
disconnects while waiting leaves its slot unused: the limit errs on the safe side.

A cool-down (after an upstream 429) holds back every caller, including those already
waiting for a slot they reserved before it began: on waking, a caller whose slot fell inside
a cool-down that started after it reserved gives the slot up and queues again behind the
cool-down (its old slot stays in the log, unused). Re-queueing is bound by `max_wait` from
that moment, so a long cool-down can turn a waiting request into a 429 rate_limited.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol

import anyio.to_thread
import diskcache
from aiolimiter import AsyncLimiter

from gateway.errors import RateLimited

_LOG_KEY = ("ratelimit", "log")
_COOLDOWN_KEY = ("ratelimit", "cooldown_until")


class RateLimiter(Protocol):
    async def acquire(self) -> float:
        """Wait for a send slot; returns seconds waited. Raises RateLimited."""
        ...

    async def cool_down(self, seconds: float) -> None:
        """Hold every caller back for `seconds` (the account is being throttled)."""
        ...


def _too_long(wait: float, max_wait: float) -> RateLimited:
    retry_after = max(1, math.ceil(wait - max_wait))
    return RateLimited(
        f"the shared upstream rate limit queue is full: the next send slot is {wait:.1f} s "
        f"away, more than the {max_wait:g} s a request may wait; retry after {retry_after} s",
        headers={"Retry-After": str(retry_after)},
    )


class DiskRateLimiter:
    def __init__(
        self,
        state: diskcache.Cache,
        *,
        limit: int,
        period: float,
        margin: float = 0.0,
        max_wait: float = 60.0,
    ) -> None:
        self.state = state
        self.limit = limit
        self.span = period + margin
        self.max_wait = max_wait

    def reserve(self, now: float | None = None) -> tuple[bool, float]:
        """Reserve the next slot in one transaction: (reserved, seconds until it)."""
        reserved, wait, _slot = self._reserve(now)
        return reserved, wait

    def _reserve(self, now: float | None = None) -> tuple[bool, float, float]:
        with self.state.transact():
            now = time.time() if now is None else now
            log: list[float] = self.state.get(_LOG_KEY, [])
            slot = max(now, float(self.state.get(_COOLDOWN_KEY, 0.0)))
            if len(log) >= self.limit:
                slot = max(slot, log[-self.limit] + self.span)
            wait = slot - now
            if wait > self.max_wait:
                return False, wait, slot
            log.append(slot)
            self.state.set(_LOG_KEY, log[-self.limit :])
            return True, wait, slot

    def _voided(self, slot: float) -> bool:
        """Whether a cool-down that began after `slot` was reserved still covers it."""
        return float(self.state.get(_COOLDOWN_KEY, 0.0)) > slot

    async def acquire(self) -> float:
        started = time.monotonic()
        while True:
            reserved, wait, slot = await anyio.to_thread.run_sync(self._reserve)
            if not reserved:
                raise _too_long(wait, self.max_wait)
            if wait <= 0:
                return time.monotonic() - started
            await asyncio.sleep(wait)
            # A slot reserved before a cool-down began is not a licence to send during it.
            if not await anyio.to_thread.run_sync(self._voided, slot):
                return time.monotonic() - started

    def _set_cooldown(self, seconds: float) -> None:
        with self.state.transact():
            until = time.time() + seconds
            if until > float(self.state.get(_COOLDOWN_KEY, 0.0)):
                self.state.set(_COOLDOWN_KEY, until)

    async def cool_down(self, seconds: float) -> None:
        await anyio.to_thread.run_sync(self._set_cooldown, seconds)


class MemoryRateLimiter:
    def __init__(
        self, *, limit: int, period: float, margin: float = 0.0, max_wait: float = 60.0
    ) -> None:
        self.interval = (period + margin) / limit
        self.limiter = AsyncLimiter(1, self.interval)
        self.max_wait = max_wait
        self.cooldown_until = 0.0
        self.waiting = 0

    async def acquire(self) -> float:
        start = time.monotonic()
        pause = self.cooldown_until - time.monotonic()
        expected = max(pause, 0.0) + self.waiting * self.interval
        if expected > self.max_wait:
            raise _too_long(expected, self.max_wait)
        self.waiting += 1
        try:
            while True:
                pause = self.cooldown_until - time.monotonic()
                if pause > 0:
                    await asyncio.sleep(pause)
                remaining = self.max_wait - (time.monotonic() - start)
                await asyncio.wait_for(self.limiter.acquire(), timeout=max(remaining, 0.001))
                # A cool-down that began while we queued voids the token: queue again after it.
                if time.monotonic() >= self.cooldown_until:
                    break
        except TimeoutError:
            raise _too_long(time.monotonic() - start + self.interval, self.max_wait) from None
        finally:
            self.waiting -= 1
        return time.monotonic() - start

    async def cool_down(self, seconds: float) -> None:
        self.cooldown_until = max(self.cooldown_until, time.monotonic() + seconds)
