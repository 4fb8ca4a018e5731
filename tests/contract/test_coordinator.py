"""The Coordinator contract: leases, records, counters and the shared rate limit."""

from __future__ import annotations

import asyncio
import time

import pytest

from cache.interfaces import Coordinator, LedgerQuery, LedgerRecord, QueueFull, Ticket
from tests.contract.conftest import CoordinatorFactory
from tests.fakes.stability import count_max_in_window

pytestmark = pytest.mark.anyio


class TestLeases:
    async def test_one_holder_at_a_time(self, open_coordinator: CoordinatorFactory) -> None:
        a, b = open_coordinator(), open_coordinator()
        assert await a.acquire_lease("k", "ta", 30)
        assert not await b.acquire_lease("k", "tb", 30)
        await b.release_lease("k", "tb")  # not the holder: nothing happens
        assert not await b.acquire_lease("k", "tb", 30)
        await a.release_lease("k", "ta")
        assert await b.acquire_lease("k", "tb", 30)

    async def test_expiry_and_renewal(self, coordinator: Coordinator) -> None:
        assert await coordinator.acquire_lease("k", "t1", 0.3)
        assert await coordinator.renew_lease("k", "t1", 0.3)
        await asyncio.sleep(0.5)
        assert not await coordinator.renew_lease("k", "t1", 0.3)  # expired: lost
        assert await coordinator.acquire_lease("k", "t2", 30)
        await coordinator.release_lease("k", "t1")  # late: must not free the new holder's
        assert not await coordinator.acquire_lease("k", "t3", 30)

    async def test_wait_released(self, coordinator: Coordinator) -> None:
        await coordinator.wait_released("free", 5)  # nobody holds it: at once
        assert await coordinator.acquire_lease("k", "t", 30)
        started = time.monotonic()
        await coordinator.wait_released("k", 0.2)  # still held: gives up at the timeout
        assert time.monotonic() - started >= 0.2

        async def release_soon() -> None:
            await asyncio.sleep(0.1)
            await coordinator.release_lease("k", "t")

        task = asyncio.ensure_future(release_soon())
        started = time.monotonic()
        await coordinator.wait_released("k", 30)
        await task
        assert time.monotonic() - started < 10  # woke on the release, not the timeout


class TestRecordsAndCounters:
    async def test_records_expire(self, coordinator: Coordinator) -> None:
        await coordinator.remember("job", "j1", {"key": "k"}, 0.3)
        assert await coordinator.recall("job", "j1") == {"key": "k"}
        assert await coordinator.recall("job", "other") is None
        await asyncio.sleep(0.5)
        assert await coordinator.recall("job", "j1") is None

    async def test_counters_from_two_workers_add_up(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        a, b = open_coordinator(), open_coordinator()
        await a.add_counts({"misses": 1, "hits": 2})
        await b.add_counts({"misses": 4})
        counts = await a.counts()
        assert counts["misses"] == 5 and counts["hits"] == 2


class TestRateLimit:
    async def test_no_window_holds_more_than_the_limit(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        """Two workers' limiters on one backend: 14 sends at 4 per 0.4 s. The limit holds for
        the send times the limiter records; the margin (as in production) absorbs the few
        milliseconds between that and when a caller observes its turn."""
        a, b = (open_coordinator(limit=4, period=0.4, margin=0.05) for _ in range(2))
        sent: list[float] = []

        async def send(limiter: Coordinator) -> None:
            await limiter.limiter.acquire()
            sent.append(time.time())

        await asyncio.gather(*(send(a if i % 2 else b) for i in range(14)))
        assert len(sent) == 14 and count_max_in_window(sent, 0.4) <= 4

    async def test_first_come_first_served_per_caller(self, coordinator: Coordinator) -> None:
        limited = coordinator  # 100 per second: order, not waiting, is what is checked
        order: list[int] = []

        async def send(i: int) -> None:
            await limited.limiter.acquire(Ticket("same"))
            order.append(i)

        tasks = []
        for i in range(8):
            tasks.append(asyncio.ensure_future(send(i)))
            await asyncio.sleep(0.01)
        await asyncio.gather(*tasks)
        assert order == list(range(8))

    async def test_a_queue_too_long_is_refused_and_keeps_nothing(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        coordinator = open_coordinator(limit=2, period=10.0, max_wait=5.0)
        await coordinator.limiter.acquire()
        await coordinator.limiter.acquire()
        with pytest.raises(QueueFull) as caught:
            await coordinator.limiter.acquire()
        assert caught.value.wait == pytest.approx(10.0, abs=0.5)
        assert coordinator.limiter.queue_depth() == 0

    async def test_a_send_that_left_late_is_counted_from_then(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        """One send per 10 s; the first left 3 s after its grant (a slow handshake): the next
        turn is 10 s after it left, not after it was granted."""
        coordinator = open_coordinator(limit=1, period=10.0, max_wait=5.0)
        slot = await coordinator.limiter.acquire()
        assert slot.stamp is not None and slot.waited < 5
        await coordinator.limiter.restamp(slot, 3.0)
        with pytest.raises(QueueFull) as caught:
            await coordinator.limiter.acquire()
        assert caught.value.wait == pytest.approx(13.0, abs=0.5)

    async def test_a_cool_down_holds_everyone(self, open_coordinator: CoordinatorFactory) -> None:
        coordinator = open_coordinator(limit=100, period=1.0, max_wait=0.5)
        await coordinator.limiter.cool_down(5)
        with pytest.raises(QueueFull) as caught:
            await coordinator.limiter.acquire()
        assert caught.value.wait >= 4

    async def test_interactive_before_batch_and_callers_in_turn(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        coordinator = open_coordinator(limit=1, period=0.15)
        order: list[str] = []

        async def send(name: str, ticket: Ticket) -> None:
            await coordinator.limiter.acquire(ticket)
            order.append(name)

        batch = Ticket("batch-job", "batch")
        tasks = [asyncio.ensure_future(send(f"b{i}", batch)) for i in range(5)]
        await asyncio.sleep(0.05)  # b0 has sent; b1..b4 wait
        tasks.append(asyncio.ensure_future(send("dev", Ticket("dev", "interactive"))))
        await asyncio.gather(*tasks)
        assert order[0] == "b0" and order[1] == "dev"
        assert [n for n in order if n.startswith("b")] == [f"b{i}" for i in range(5)]

    async def test_round_robin_within_a_priority(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        coordinator = open_coordinator(limit=1, period=0.1)
        order: list[str] = []

        async def send(caller: str) -> None:
            await coordinator.limiter.acquire(Ticket(caller))
            order.append(caller)

        tasks = [asyncio.ensure_future(send("a")) for _ in range(4)]
        await asyncio.sleep(0.03)
        tasks += [asyncio.ensure_future(send("b")) for _ in range(2)]
        await asyncio.gather(*tasks)
        assert order == ["a", "b", "a", "b", "a", "a"]


class TestBudgetsAndLedger:
    async def test_add_within_never_passes_the_cap(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        """Two workers charging one budget at once: never more than the cap in all."""
        a, b = open_coordinator(), open_coordinator()
        results = await asyncio.gather(
            *(w.add_within("budget:day", 3, 7, 60) for w in (a, b, a, b, a))
        )
        assert sum(results) == 2 and await a.value("budget:day") == 6
        assert await b.add_within("budget:day", -3, 7, 60)  # a refund always applies
        assert await a.add_within("budget:day", 3, 7, 60)
        assert await a.value("other") == 0

    async def test_add_within_expires(self, coordinator: Coordinator) -> None:
        assert await coordinator.add_within("rpm:dev", 1, 1, 0.3)
        assert not await coordinator.add_within("rpm:dev", 1, 1, 0.3)
        await asyncio.sleep(0.5)
        assert await coordinator.add_within("rpm:dev", 1, 1, 0.3)

    async def test_ledger_records_pages_and_days(
        self, open_coordinator: CoordinatorFactory
    ) -> None:
        a, b = open_coordinator(), open_coordinator()
        day = 1_796_000_000.0  # 2026-11-30 UTC
        records = [
            LedgerRecord(day + i, "call", "v1/text-to-image", "e", f"k{i}", 200, 1, 3.0, "dev")
            for i in range(3)
        ]
        records += [LedgerRecord(day + 10, "call", "v1/text-to-image", "e", "k9", 504, 0, None)]
        records += [LedgerRecord(day + 86400, "hit", "v1/text-to-image", "e", "k0", 200, 1, 3.0)]
        await a.append_ledger(records[:2])
        await b.append_ledger(records[2:])
        page = await a.query_ledger(LedgerQuery(limit=2))
        assert page.total == 5 and [r.key for r in page.records] == ["k0", "k9"]
        assert page.days["2026-11-30"] == {"spent": 9.0, "saved": 0.0, "calls": 4, "hits": 0,
                                           "unknown": 1}  # fmt: skip
        assert page.days["2026-12-01"]["saved"] == 3.0
        mine = await b.query_ledger(LedgerQuery(caller="dev", since=day + 1))
        assert mine.total == 2 and {r.key for r in mine.records} == {"k1", "k2"}
        hits = await b.query_ledger(LedgerQuery(kind="hit"))
        assert hits.total == 1 and hits.records[0] == records[-1]
