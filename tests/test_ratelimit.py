"""The local backend's limiters: in-process pacing, cool-downs, and the full-disk fallback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from cache.interfaces import CoordinationError, QueueFull, RateLimiter, Slot, Ticket
from cache.local import LocalCoordinator
from cache.local.ratelimit import FallbackLimiter, MemoryRateLimiter

pytestmark = pytest.mark.anyio


async def test_memory_limiter_paces_and_refuses_long_queues() -> None:
    limiter = MemoryRateLimiter(limit=4, period=0.4, max_wait=0.35)
    results = await asyncio.gather(*(limiter.acquire() for _ in range(6)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, QueueFull)]
    assert 1 <= len(refused) <= 3  # the queue beyond 0.35 s of pacing is refused
    assert limiter.queue_depth() == 0


async def test_memory_limiter_serves_interactive_callers_first() -> None:
    limiter = MemoryRateLimiter(limit=1, period=0.1, max_wait=10)
    order: list[str] = []

    async def send(name: str, ticket: Ticket) -> None:
        await limiter.acquire(ticket)
        order.append(name)

    tasks = [asyncio.ensure_future(send(f"b{i}", Ticket("job", "batch"))) for i in range(4)]
    await asyncio.sleep(0.03)
    tasks.append(asyncio.ensure_future(send("dev", Ticket("dev"))))
    await asyncio.gather(*tasks)
    assert order.index("dev") <= 1 and [n for n in order if n != "dev"] == ["b0", "b1", "b2", "b3"]


@pytest.mark.parametrize("backend", ["disk", "memory"])
async def test_a_cool_down_holds_back_callers_already_queued(tmp_path: Path, backend: str) -> None:
    """Callers queued for a slot before an upstream 429 must not send during the cool-down
    it starts; after it, the pace still holds."""
    coordinator = LocalCoordinator(tmp_path, limit=1, period=0.1, max_wait=5, backend=backend)
    limiter = coordinator.limiter
    started = time.monotonic()
    sent: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        sent.append(time.monotonic() - started)

    callers = [asyncio.ensure_future(caller()) for _ in range(3)]
    await asyncio.sleep(0.05)  # the first has sent; the others wait
    cooled_at = time.monotonic() - started
    await limiter.cool_down(0.4)
    await asyncio.gather(*callers)
    sent.sort()
    assert min(sent[1:]) >= cooled_at + 0.4 - 0.005, sent
    assert sent[2] - sent[1] >= 0.1 - 0.01, sent
    await coordinator.close()


async def test_in_process_pacing_after_a_late_send() -> None:
    """The next send goes one interval after the late one left, not after its grant."""
    limiter = MemoryRateLimiter(limit=1, period=0.2, max_wait=10)
    slot = await limiter.acquire()
    await limiter.restamp(slot, 0.5)
    await limiter.acquire()
    assert time.monotonic() - slot.granted >= 0.7 - 0.01


class Broken:
    """A shared limiter whose folder cannot be written (a full disk)."""

    async def acquire(self, ticket: Ticket = Ticket()) -> Slot:  # noqa: B008
        raise CoordinationError("no space left on the device", where="/full")

    async def restamp(self, slot: Slot, late: float) -> None:
        raise CoordinationError("no space left on the device", where="/full")

    async def cool_down(self, seconds: float) -> None:
        raise CoordinationError("no space left on the device", where="/full")

    def queue_depth(self) -> int:
        return 0


async def test_a_full_disk_falls_back_to_this_workers_share(
    caplog: pytest.LogCaptureFixture,
) -> None:
    share = MemoryRateLimiter(limit=2, period=0.5, max_wait=10)
    limiter: RateLimiter = FallbackLimiter(Broken(), share, "/full")
    started = time.monotonic()
    for _ in range(3):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.2  # paced at the share, not unlimited
    await limiter.cool_down(1)  # does not raise
    await limiter.restamp(Slot(0.0, time.monotonic(), stamp=1.0), 0.5)  # nor does this
    assert sum("cannot be written" in r.message for r in caplog.records) == 1  # logged once
