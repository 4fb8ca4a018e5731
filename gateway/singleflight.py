"""Identical requests in flight at once share one upstream call.

Within a process: the first caller for a key (the leader) starts the work as a task of its
own; everyone else for that key awaits the same task and gets its result or its exception.
The task is shielded, so a leader whose client hangs up does not cancel the others' answer.

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
from collections.abc import Awaitable, Callable
from typing import TypeVar

import diskcache

T = TypeVar("T")


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[object]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """(result, led): led is True for the one caller whose call did the work."""
        task = self._flights.get(key)
        led = task is None
        if task is None:
            task = asyncio.ensure_future(work())
            self._flights[key] = task
            task.add_done_callback(lambda _t: self._flights.pop(key, None))
        result = await asyncio.shield(task)
        return result, led  # type: ignore[return-value]


class DiskLease:
    """A per-key lease in the shared state cache: `add` is atomic across processes."""

    def __init__(self, state: diskcache.Cache, key: str, seconds: float) -> None:
        self.state = state
        self.name = ("flight", key)
        self.seconds = seconds

    def acquire(self) -> bool:
        return bool(self.state.add(self.name, os.getpid(), expire=self.seconds))

    def held_elsewhere(self) -> bool:
        return self.state.get(self.name) is not None

    def release(self) -> None:
        self.state.delete(self.name)
