"""cache.redis.coalesced: overlapping reads share round trips, and a read is never older
than its caller's question (version mode's promise). Against a scripted read function;
tests/test_redis_backend.py runs it on the real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from cache.redis.coalesced import CoalescedReads

pytestmark = pytest.mark.anyio


class Store:
    """Values by key; each read takes its snapshot when sent, and may be held back."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.sent: list[list[str]] = []
        self.hold: asyncio.Event | None = None
        self.fail: Exception | None = None

    async def read_many(self, keys: Sequence[str]) -> list[str | None]:
        self.sent.append(list(keys))
        snapshot = [self.values.get(key) for key in keys]
        await asyncio.sleep(0)  # a round trip lets other tasks run
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return snapshot


async def test_reads_asked_while_one_is_out_go_as_one_and_each_key_once() -> None:
    store = Store()
    store.values = {"a": "1", "b": "2"}
    reads = CoalescedReads(store.read_many)
    got = await asyncio.gather(*(reads.read(k) for k in ["a", "b", "a", "none"] * 10))
    assert got == ["1", "2", "1", None] * 10
    # The first goes at once, alone; the 39 asked while it was out, as one.
    assert store.sent == [["a"], ["b", "a", "none"]] and reads.round_trips == 2


async def test_a_lone_read_goes_at_once_each_time() -> None:
    store = Store()
    store.values = {"a": "1"}
    reads = CoalescedReads(store.read_many)
    for _ in range(3):
        assert await reads.read("a") == "1"
    assert store.sent == [["a"]] * 3


async def test_a_read_asked_while_one_is_out_is_sent_after_it_and_sees_later_writes() -> None:
    """Joining the read already out would answer with a value from before the question:
    the later caller waits for it, then asks anew."""
    store = Store()
    store.values = {"k": "old"}
    store.hold = asyncio.Event()
    reads = CoalescedReads(store.read_many)
    first = asyncio.ensure_future(reads.read("k"))
    while not store.sent:
        await asyncio.sleep(0)
    store.values["k"] = "new"  # a write that commits while the first read is out
    second = asyncio.ensure_future(reads.read("k"))
    third = asyncio.ensure_future(reads.read("k"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.sent == [["k"]]  # nothing else is sent while one is out
    store.hold.set()
    assert await first == "old"
    assert await second == "new" and await third == "new"
    assert store.sent == [["k"], ["k"]]


async def test_an_error_reaches_every_caller_of_that_read_and_the_next_read_goes_on() -> None:
    store = Store()
    store.values = {"a": "1"}
    store.fail = ConnectionError("redis went away")
    reads = CoalescedReads(store.read_many)
    got = await asyncio.gather(*(reads.read("a") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(e, ConnectionError) for e in got)
    store.fail = None
    assert await reads.read("a") == "1"


async def test_a_caller_that_gives_up_leaves_the_others_their_answer() -> None:
    store = Store()
    store.values = {"a": "1"}
    store.hold = asyncio.Event()
    reads = CoalescedReads(store.read_many)
    quitter = asyncio.ensure_future(reads.read("a"))
    stayer = asyncio.ensure_future(reads.read("a"))
    while not store.sent:
        await asyncio.sleep(0)
    quitter.cancel()
    store.hold.set()
    assert await stayer == "1"
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert await reads.read("a") == "1"  # and nothing is left stuck


async def test_a_wrong_count_of_values_is_an_error_not_a_hang() -> None:
    async def short(keys: Sequence[str]) -> list[str | None]:
        await asyncio.sleep(0)
        return []

    reads: CoalescedReads[str | None] = CoalescedReads(short)
    with pytest.raises(RuntimeError, match="0 values read for 1 keys"):
        await asyncio.wait_for(reads.read("a"), 5)


async def test_when_the_read_under_way_fails_or_is_given_up_those_waiting_still_go() -> None:
    store = Store()
    store.values = {"a": "1"}
    store.hold = asyncio.Event()
    reads = CoalescedReads(store.read_many)
    first = asyncio.ensure_future(reads.read("a"))  # goes at once, on its own task
    while not store.sent:
        await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(reads.read("a")) for _ in range(3)]
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    store.hold.set()
    assert await asyncio.gather(*waiting) == ["1"] * 3
    assert store.sent == [["a"], ["a"]]
