"""Identical requests in flight at once share one upstream call.

Within a process: the first caller for a key (the leader) starts the work as a task of its
own; everyone else for that key awaits the same task and gets its result or its exception.
The task is shielded, so a leader whose client hangs up does not cancel the others' answer;
when the last caller leaves before the upstream call was sent, the work is cancelled.

Across worker processes: the pipeline additionally takes a lease in the shared diskcache
(`DiskLease`) before calling upstream; a process that finds the lease taken waits for the
entry to appear in the cache instead of calling upstream itself. Having taken the lease, the
pipeline looks again for an entry newer than the one the request saw at lookup, because the
previous holder may have stored and let go in between; without that second look, identical
requests in two workers could still cost two calls. Waiting for the lease spends the
request's own deadline. Errors are shared only within a process: when another process's
call fails (or its answer is not cacheable, e.g. CONTENT_FILTERED), waiters elsewhere try
once themselves, so a failing key costs up to one retried call per worker process.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import diskcache

T = TypeVar("T")


class Flight:
    """One shared call: how many callers still wait for it, and whether it has been sent.

    Once the upstream request has gone out the credit is spent, so the call is finished and
    its result cached even if every caller has left; before that, a flight nobody waits for
    any more is cancelled, and its place in the rate-limit queue goes unused.
    """

    def __init__(self) -> None:
        self.waiters = 0
        self.committed = False
        self.task: asyncio.Task[object] | None = None

    def commit(self) -> None:
        self.committed = True


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    def _forget(self, key: str, flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def run(self, key: str, work: Callable[[Flight], Awaitable[T]]) -> tuple[T, bool]:
        """(result, led): led is True for the one caller whose call did the work.

        Cancelling a caller (its client hung up) never cancels the others' answer; the last
        caller to leave cancels the work only if it has not committed to the upstream yet.
        """
        flight = self._flights.get(key)
        led = flight is None
        if flight is None:
            flight = self._flights[key] = Flight()
            flight.task = asyncio.ensure_future(work(flight))
            flight.task.add_done_callback(lambda _t: self._forget(key, flight))
        assert flight.task is not None
        flight.waiters += 1
        try:
            result = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.waiters == 1 and not flight.committed:
                # Forget it now, not when the task has wound down: a request arriving in
                # between must start a flight of its own, not join one being cancelled.
                self._forget(key, flight)
                flight.task.cancel()
            raise
        finally:
            flight.waiters -= 1
        return result, led  # type: ignore[return-value]


class DiskLease:
    """A per-key lease in the shared state cache: `add` is atomic across processes.

    The lease holds a token of its own, and `release` deletes it only while the token is
    still there: a holder whose lease expired (it outlived the deadline) must not delete
    the lease another worker has taken since.
    """

    def __init__(self, state: diskcache.Cache, key: str, seconds: float) -> None:
        self.state = state
        self.name = ("flight", key)
        self.seconds = seconds
        self.token = f"{os.getpid()}:{uuid.uuid4().hex}"

    def acquire(self) -> bool:
        return bool(self.state.add(self.name, self.token, expire=self.seconds))

    def held_elsewhere(self) -> bool:
        holder = self.state.get(self.name)
        return holder is not None and holder != self.token

    def release(self) -> None:
        with self.state.transact():
            if self.state.get(self.name) == self.token:
                self.state.delete(self.name)
