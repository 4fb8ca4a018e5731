"""The waiting half of a shared rate limiter, whatever holds its state.

A request joins the fair queue (cache.fair_queue) in one atomic step, then sleeps until its
estimated turn (or the heartbeat, which renews its ticket), polls, and so on until it has
sent; if it gives up (its caller hung up), it leaves the queue without making anyone wait
for that. A backend supplies only `_transact(step)`: apply `step(state, now)` to its state
atomically, on its own clock (a SQLite transaction; a Redis compare-and-set on Redis's
TIME). This process's steps run one at a time, in the order they were asked for (an
asyncio.Lock is FIFO), so two requests a microsecond apart keep their order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from cache import fair_queue
from cache.fair_queue import QueueState, Rules
from cache.interfaces import ANONYMOUS, Slot, Ticket

HEARTBEAT_SECONDS = 1.0
TICKET_TTL_SECONDS = 5.0

Step = Callable[[QueueState, float], Any]


class Wakeup:
    """Lets this process's waiters re-check at once when one of them sends or leaves
    (other processes' changes are seen at the next heartbeat)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    async def sleep(self, seconds: float) -> None:
        if self._event is None:
            self._event = asyncio.Event()
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), max(seconds, 0.0))


class QueuedLimiter(ABC):
    def __init__(
        self,
        *,
        limit: int,
        period: float,
        margin: float = 0.0,
        max_wait: float = 60.0,
        heartbeat: float = HEARTBEAT_SECONDS,
        ticket_ttl: float = TICKET_TTL_SECONDS,
    ) -> None:
        self.rules = Rules(limit, period + margin, max_wait, ticket_ttl)
        self.heartbeat = heartbeat
        self.waiting = 0
        self._wakeup = Wakeup()
        self._leaving: set[asyncio.Future[None]] = set()
        self._turn = asyncio.Lock()

    @abstractmethod
    async def _apply(self, step: Step) -> Any:
        """Apply `step(state, now)` to the shared state atomically; an exception from it
        (QueueFull) writes nothing."""

    async def _transact(self, step: Step) -> Any:
        async with self._turn:
            return await self._apply(step)

    async def acquire(self, ticket: Ticket = ANONYMOUS) -> Slot:
        started = time.monotonic()
        ident = uuid.uuid4().hex
        rules = self.rules

        # Each step also returns its `now` (on the send, the time the log holds) and this
        # process's monotonic clock at that moment, which a restamp is measured from.
        def join(state: QueueState, now: float) -> tuple[float, float, float]:
            wait = fair_queue.join(state, ident, ticket, now, rules, ticket.arrived)
            return wait, now, time.monotonic()

        def poll(state: QueueState, now: float) -> tuple[float, float, float]:
            return fair_queue.poll(state, ident, ticket, now, rules), now, time.monotonic()

        self.waiting += 1
        sent = False
        try:
            wait, stamp, granted = await self._transact(join)
            while wait > 0:
                await self._wakeup.sleep(min(wait, self.heartbeat))
                wait, stamp, granted = await self._transact(poll)
            sent = True
            return Slot(time.monotonic() - started, granted, stamp)
        finally:
            self.waiting -= 1
            if not sent:
                # Leave without waiting for it: a cancelled caller must not be held up.
                # If this fails (or the process dies first), the ticket expires by itself.
                leaving = asyncio.ensure_future(self._leave(ident))
                self._leaving.add(leaving)
                leaving.add_done_callback(self._leaving.discard)
            self._wakeup.notify()

    async def _leave(self, ident: str) -> None:
        def leave(state: QueueState, now: float) -> None:
            fair_queue.leave(state, ident)

        with contextlib.suppress(Exception):
            await self._transact(leave)
        self._wakeup.notify()

    async def restamp(self, slot: Slot, late: float) -> None:
        if slot.stamp is None or late <= 0:
            return
        stamp, rules = slot.stamp, self.rules

        def move(state: QueueState, now: float) -> None:
            fair_queue.restamp(state, stamp, late, rules)

        await self._transact(move)

    async def cool_down(self, seconds: float) -> None:
        def cool(state: QueueState, now: float) -> None:
            fair_queue.cool_down(state, now + seconds)

        await self._transact(cool)

    def queue_depth(self) -> int:
        return self.waiting
