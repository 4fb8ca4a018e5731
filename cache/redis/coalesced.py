"""Reads of many callers in one round trip, each sent after its caller asked.

With `[redis] hit_check = "version"` every hit asks Redis for its entry's version: one
command per hit, and redis-py's client costs more CPU per command than the hit's own work
(bench/README.md, "redis-hit"). `CoalescedReads` keeps at most one read under way: a read
asked when none is goes at once, alone; keys asked while one is out wait for it to come
back, then go together as one pipeline, and a key asked by several callers is read once
for all of them.

What version mode promises still holds: a hit sees every write committed before it asked,
because the read that answers it is sent after it asked (a caller never joins a read that
is already out). What a caller may pay is the wait for the read ahead of its own: at most
one round trip, and only when reads overlap; a lone hit goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

V = TypeVar("V")


class CoalescedReads(Generic[V]):
    def __init__(self, read_many: Callable[[Sequence[str]], Awaitable[Sequence[V]]]) -> None:
        self._read_many = read_many
        self._next: dict[str, list[asyncio.Future[V]]] = {}  # asked, not sent yet
        self._out = False  # a read is under way
        self._later: set[asyncio.Task[None]] = set()
        self.round_trips = 0  # for tests and the bench

    async def read(self, key: str) -> V:
        if self._out:  # wait for it, then go with everyone else who asked meanwhile
            answer: asyncio.Future[V] = asyncio.get_running_loop().create_future()
            self._next.setdefault(key, []).append(answer)
            return await answer
        # Nothing under way: go at once, on the caller's own task (no extra turn of the
        # loop, which a lone hit would pay for in an epoll call).
        self._out = True
        try:
            return (await self._round_trip([key]))[0]
        finally:
            self._done()

    async def _round_trip(self, keys: list[str]) -> list[V]:
        self.round_trips += 1
        values = list(await self._read_many(keys))
        if len(values) != len(keys):
            raise RuntimeError(f"{len(values)} values read for {len(keys)} keys")
        return values

    def _done(self) -> None:
        """The read under way came back: send what was asked meanwhile."""
        self._out = False
        if self._next:
            batch, self._next = self._next, {}
            self._out = True
            task = asyncio.get_running_loop().create_task(self._read(batch))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    async def _read(self, batch: dict[str, list[asyncio.Future[V]]]) -> None:
        try:
            values = await self._round_trip(list(batch))
        except asyncio.CancelledError:
            for answer in _waiting(batch):
                answer.cancel()
            raise
        except Exception as exc:  # every caller of this read gets its error
            for answer in _waiting(batch):
                answer.set_exception(exc)
        else:
            for answers, value in zip(batch.values(), values, strict=True):
                for answer in answers:
                    if not answer.done():  # (a caller that gave up)
                        answer.set_result(value)
        finally:
            self._done()


def _waiting(batch: dict[str, list[asyncio.Future[V]]]) -> list[asyncio.Future[V]]:
    return [answer for answers in batch.values() for answer in answers if not answer.done()]
