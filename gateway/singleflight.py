"""Identical requests in flight at once, in one process, share one piece of work.

The first caller for a key (the leader) starts the work as a task of its own; everyone
else for that key awaits the same flight and gets its answer or its exception. The work
may *publish* its answer before it has finished (the fetch path answers first and stores
after): callers get the answer as soon as it is published, while the task goes on.

The answer is shielded, so a leader whose client hangs up does not cancel the others'
answer; when the last caller leaves before the work has committed (sent its upstream
request: the credit is spent from then on), the work is cancelled. Across processes, the
fetch path adds a lease per key (see gateway.fetch).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Role = Literal["led", "joined", "late"]


class Flight(Generic[T]):
    """One shared piece of work: who still waits for it, whether it has committed to the
    upstream, and its answer."""

    def __init__(self) -> None:
        self.waiters = 0
        self.committed = False
        self.task: asyncio.Task[None] | None = None
        self.answer: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def commit(self) -> None:
        self.committed = True

    def publish(self, result: T) -> None:
        """Hand callers their answer now; the work may go on (storing, say)."""
        if not self.answer.done():
            self.answer.set_result(result)


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, Flight[T]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    async def settled(self, timeout: float) -> None:
        """Wait (at most `timeout`) for flights that have answered but are still finishing,
        so that what they store is visible to what comes next (the inspection API)."""
        finishing = [
            f.task for f in self._flights.values() if f.answer.done() and f.task is not None
        ]
        if finishing:
            await asyncio.wait(finishing, timeout=timeout)

    async def finished(self, key: str, timeout: float) -> None:
        """Wait (at most `timeout`) for the flights for `key` (or `key:...`) that have
        answered and are still finishing: what they store is then there to be read."""
        finishing = {
            flight.task
            for name, flight in self._flights.items()
            if (name == key or name.startswith(f"{key}:"))
            and flight.answer.done()
            and flight.task is not None
        }
        if finishing:
            await asyncio.wait(finishing, timeout=timeout)

    def _forget(self, key: str, flight: Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def run(
        self, key: str, work: Callable[[Flight[T]], Awaitable[T]], *, join_late: bool = True
    ) -> tuple[T, Role]:
        """(answer, role): "led" for the one caller whose call started the work, "joined"
        for those who waited for it, "late" for those who came once it was answered (the
        work still finishing, storing say). With `join_late` False, a flight already
        answered is not joined: the caller starts a new one."""
        flight = self._flights.get(key)
        if flight is not None and flight.answer.done() and not join_late:
            flight = None
        role: Role = "led" if flight is None else "late" if flight.answer.done() else "joined"
        if flight is None:
            flight = self._flights[key] = Flight()
            flight.task = asyncio.ensure_future(self._drive(key, flight, work))
        assert flight.task is not None
        flight.waiters += 1
        try:
            result = await asyncio.shield(flight.answer)
        except asyncio.CancelledError:
            if flight.waiters == 1 and not flight.committed and not flight.answer.done():
                # Forget it now, not when the task has wound down: a request arriving in
                # between must start a flight of its own, not join one being cancelled.
                self._forget(key, flight)
                flight.task.cancel()
            raise
        finally:
            flight.waiters -= 1
        return result, role

    async def _drive(
        self, key: str, flight: Flight[T], work: Callable[[Flight[T]], Awaitable[T]]
    ) -> None:
        try:
            flight.publish(await work(flight))
        except asyncio.CancelledError:
            if not flight.answer.done():
                flight.answer.cancel()
        except BaseException as exc:
            if not flight.answer.done():
                flight.answer.set_exception(exc)
                _ = flight.answer.exception()  # retrieved: nobody may be left to await it
            if not isinstance(exc, Exception):
                raise
        finally:
            self._forget(key, flight)
