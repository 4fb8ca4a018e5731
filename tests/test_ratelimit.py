"""The limiters: at most `limit` sends in any window, first come first served."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import diskcache
import pytest

from gateway.errors import RateLimited
from gateway.ratelimit import DiskRateLimiter, MemoryRateLimiter


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


def test_reservations_never_put_more_than_limit_in_a_window(tmp_path: Path) -> None:
    state = diskcache.Cache(str(tmp_path))
    limiter = DiskRateLimiter(state, limit=5, period=2.0, max_wait=100)
    slots = []
    for i in range(23):
        reserved, wait = limiter.reserve(now=1000.0 + i * 0.05)
        assert reserved
        slots.append(1000.0 + i * 0.05 + wait)
    assert slots == sorted(slots)  # first come, first served
    assert max_in_window(slots, 2.0) == 5
    assert slots[:5] == [1000.0 + i * 0.05 for i in range(5)]  # a burst goes straight out
    assert slots[5] == pytest.approx(1002.0)


def test_too_long_a_wait_reserves_nothing(tmp_path: Path) -> None:
    limiter = DiskRateLimiter(diskcache.Cache(str(tmp_path)), limit=2, period=10.0, max_wait=5)
    assert limiter.reserve(now=0.0)[0] and limiter.reserve(now=0.0)[0]
    reserved, wait = limiter.reserve(now=0.0)
    assert not reserved and wait == pytest.approx(10.0)
    assert limiter.reserve(now=10.0)[0]  # the refused call left no slot behind


def test_two_limiters_on_one_folder_share_the_log(tmp_path: Path) -> None:
    """What two worker processes do: each has its own object on the same cache folder."""
    a = DiskRateLimiter(diskcache.Cache(str(tmp_path)), limit=3, period=1.0, max_wait=10)
    b = DiskRateLimiter(diskcache.Cache(str(tmp_path)), limit=3, period=1.0, max_wait=10)
    slots = [x.reserve(now=5.0)[1] for x in (a, b, a, b, a, b)]
    assert slots == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]


@pytest.mark.anyio
async def test_disk_limiter_cool_down_and_429(tmp_path: Path) -> None:
    limiter = DiskRateLimiter(diskcache.Cache(str(tmp_path)), limit=100, period=1.0, max_wait=0.5)
    await limiter.cool_down(5)
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire()
    assert caught.value.status == 429 and int(caught.value.headers["Retry-After"]) >= 4


@pytest.mark.anyio
async def test_memory_limiter_paces_and_refuses_long_queues() -> None:
    limiter = MemoryRateLimiter(limit=4, period=0.4, max_wait=0.35)
    started = time.monotonic()
    results = await asyncio.gather(*(limiter.acquire() for _ in range(6)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, RateLimited)]
    assert 1 <= len(refused) <= 3  # the queue beyond 0.35 s of pacing is refused
    assert time.monotonic() - started < 2


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["disk", "memory"])
async def test_a_cool_down_holds_back_callers_already_queued(tmp_path: Path, backend: str) -> None:
    """Callers that reserved (disk) or queued for (memory) a slot before an upstream 429
    must not send during the cool-down it starts; after it, the pace still holds."""
    limiter: DiskRateLimiter | MemoryRateLimiter
    if backend == "disk":
        limiter = DiskRateLimiter(diskcache.Cache(str(tmp_path)), limit=1, period=0.1, max_wait=5)
    else:
        limiter = MemoryRateLimiter(limit=1, period=0.1, max_wait=5)
    started = time.monotonic()
    sent: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        sent.append(time.monotonic() - started)

    callers = [asyncio.create_task(caller()) for _ in range(3)]
    await asyncio.sleep(0.05)  # the first has sent; the others wait for 0.1 s and 0.2 s
    cooled_at = time.monotonic() - started
    await limiter.cool_down(0.4)
    await asyncio.gather(*callers)
    assert sent[0] < 0.05
    assert min(sent[1:]) >= cooled_at + 0.4 - 0.005, sent
    assert sent[2] - sent[1] >= 0.1 - 0.005, sent
