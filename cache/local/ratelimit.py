"""Rate limiters of the local backend.

- `DiskRateLimiter` (default): the fair queue of `cache.fair_queue`, its state in the cache
  folder's diskcache and every change one SQLite transaction, so every worker process of
  the host shares one limit and one queue.
- `MemoryRateLimiter`: one process only, sends paced evenly by aiolimiter (its bucket lets
  a full burst through and then refills, so evenly paced is the only setting that keeps
  every window under the limit), waiters served in the same fair order.
- `FallbackLimiter`: the disk limiter, or, while the cache folder cannot be written (a
  full disk), an in-process limiter at this worker's share of the limit, so a full disk
  neither stops the gateway nor lets the workers together exceed the limit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import anyio.to_thread
import diskcache
from aiolimiter import AsyncLimiter

from cache import fair_queue
from cache.fair_queue import QueueState, Waiting
from cache.interfaces import (
    ANONYMOUS,
    CoordinationError,
    QueueFull,
    RateLimiter,
    Slot,
    Ticket,
)
from cache.local.errors import coordination_errors
from cache.queued_limiter import HEARTBEAT_SECONDS, TICKET_TTL_SECONDS, QueuedLimiter, Step

log = logging.getLogger("cache.ratelimit")

STATE_KEY = ("ratelimit", "queue")
FALLBACK_LOG_SECONDS = 60.0


class DiskRateLimiter(QueuedLimiter):
    def __init__(
        self,
        state: diskcache.Cache,
        *,
        limit: int,
        period: float,
        margin: float = 0.0,
        max_wait: float = 60.0,
        heartbeat: float = HEARTBEAT_SECONDS,
        ticket_ttl: float = TICKET_TTL_SECONDS,
        where: str = "",
    ) -> None:
        super().__init__(limit=limit, period=period, margin=margin, max_wait=max_wait,
                         heartbeat=heartbeat, ticket_ttl=ticket_ttl)  # fmt: skip
        self.state = state
        self.where = where or str(state.directory)

    def _apply_sync(self, step: Step) -> Any:
        """One transaction: read the state, apply `step(state, now)`, write it."""
        with coordination_errors(self.where), self.state.transact():
            state = QueueState.from_dict(self.state.get(STATE_KEY))
            result = step(state, time.time())
            self.state.set(STATE_KEY, state.to_dict())
            return result

    async def _apply(self, step: Step) -> Any:
        return await anyio.to_thread.run_sync(self._apply_sync, step)

    def snapshot(self) -> QueueState:
        with coordination_errors(self.where):
            return QueueState.from_dict(self.state.get(STATE_KEY))


class MemoryRateLimiter:
    def __init__(
        self, *, limit: int, period: float, margin: float = 0.0, max_wait: float = 60.0
    ) -> None:
        self.interval = (period + margin) / limit
        self.limiter = AsyncLimiter(1, self.interval)
        self.max_wait = max_wait
        # No send before this (time.monotonic()): a cool-down after a 429, or one interval
        # after a send that left late (restamp).
        self.hold_until = 0.0
        self._state = QueueState()
        self._futures: dict[str, asyncio.Future[None]] = {}
        self._dispatcher: asyncio.Task[None] | None = None

    async def acquire(self, ticket: Ticket = ANONYMOUS) -> Slot:
        started = time.monotonic()
        expected = max(self.hold_until - started, 0.0) + len(self._futures) * self.interval
        if expected > self.max_wait:
            raise QueueFull(expected, self.max_wait)
        ident = uuid.uuid4().hex
        self._state.seq += 1
        self._state.tickets[ident] = Waiting(
            ticket.caller, ticket.priority, self._state.seq, 0.0, started
        )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[ident] = future
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch())
        try:
            await future
        finally:
            self._futures.pop(ident, None)
            self._state.tickets.pop(ident, None)
        now = time.monotonic()
        return Slot(now - started, now)

    async def _dispatch(self) -> None:
        while self._futures:
            pause = self.hold_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            await self.limiter.acquire()
            if time.monotonic() < self.hold_until:
                continue  # a hold began while we waited for the token: it voids it
            for ident in fair_queue.fair_order(self._state):
                future = self._futures.get(ident)
                if future is not None and not future.done():
                    caller = self._state.tickets[ident].caller
                    self._state.served[caller] = time.monotonic()
                    future.set_result(None)
                    break

    async def restamp(self, slot: Slot, late: float) -> None:
        """Sends are paced one interval apart: the next goes no earlier than one interval
        after the late one left (so a late send is not followed at once by an on-time one)."""
        if late > 0:
            self.hold_until = max(self.hold_until, slot.granted + late + self.interval)

    async def cool_down(self, seconds: float) -> None:
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    def queue_depth(self) -> int:
        return len(self._futures)


class FallbackLimiter:
    """`primary` (shared through the folder) while it works; else `fallback`."""

    def __init__(self, primary: RateLimiter, fallback: RateLimiter, where: str) -> None:
        self.primary = primary
        self.fallback = fallback
        self.where = where
        self._logged_at = 0.0

    def _degraded(self, exc: CoordinationError) -> None:
        now = time.monotonic()
        if now - self._logged_at >= FALLBACK_LOG_SECONDS:
            self._logged_at = now
            log.error(
                "cache folder %s: the shared rate limit cannot be written (%s); this worker "
                "paces itself at its share of the limit until the folder can be written again",
                self.where, exc,
            )  # fmt: skip

    async def acquire(self, ticket: Ticket = ANONYMOUS) -> Slot:
        try:
            return await self.primary.acquire(ticket)
        except CoordinationError as exc:
            self._degraded(exc)
            return await self.fallback.acquire(ticket)

    async def restamp(self, slot: Slot, late: float) -> None:
        """To the limiter that granted the slot: only the primary logs stamps."""
        if slot.stamp is None:
            await self.fallback.restamp(slot, late)
            return
        try:
            await self.primary.restamp(slot, late)
        except CoordinationError as exc:
            self._degraded(exc)

    async def cool_down(self, seconds: float) -> None:
        await self.fallback.cool_down(seconds)
        try:
            await self.primary.cool_down(seconds)
        except CoordinationError as exc:
            self._degraded(exc)

    def queue_depth(self) -> int:
        return self.primary.queue_depth() + self.fallback.queue_depth()
