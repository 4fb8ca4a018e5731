"""The EntryStore contract: every backend passes these."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from cache.interfaces import EntryQuery, EntryStore
from cache.model import Artifact
from tests.contract.conftest import EntryStoreFactory

pytestmark = pytest.mark.anyio
BIG = bytes(range(256)) * 200  # 51 KiB


def summary(prompt: str = "a cat", engine: str = "e1", route: str = "v1/text-to-image") -> dict:
    return {"route": route, "engine": engine, "prompts": [{"text": prompt, "weight": 1},
            {"text": "blurry", "weight": -1}], "width": 8, "height": 8}  # fmt: skip


async def put(store: EntryStore, key: str, data: bytes = BIG, **kw: str) -> str:
    meta = await store.put(key, [Artifact(data, seed=7)], summary(**kw))
    return meta.version


class TestEntryStore:
    async def test_put_then_get_and_meta(self, entry_store: EntryStore) -> None:
        meta = await entry_store.put("k1", [Artifact(BIG, seed=7)], summary())
        assert meta.bytes == len(BIG) and meta.artifacts[0].seed == 7
        entry = await entry_store.get("k1")
        assert entry is not None and entry.artifacts[0].data == BIG
        assert entry.version == meta.version == await entry_store.version("k1")
        got = await entry_store.get_meta("k1")
        assert got is not None and got.engine == "e1" and got.summary["width"] == 8
        assert await entry_store.get("nope") is None and await entry_store.version("nope") is None

    async def test_an_image_file_is_only_ever_the_checked_bytes(
        self, entry_store: EntryStore
    ) -> None:
        """`open_image` may say None (then `get` reads); a file it gives holds exactly the
        stored image, of the entry's current version, and is the caller's to close."""
        assert await entry_store.open_image("nope") is None
        version = await put(entry_store, "k1")
        await entry_store.put("pair", [Artifact(BIG, seed=1), Artifact(BIG[::-1], seed=2)],
                              summary())  # fmt: skip
        assert (await entry_store.get("k1")) is not None  # read back, and so checked
        image = await entry_store.open_image("k1")
        if image is not None:
            try:
                assert image.version == version and image.info.bytes == len(BIG)
                assert os.pread(image.file.fileno(), len(BIG) + 1, 0) == BIG
            finally:
                image.close()
        assert await entry_store.open_image("pair") is None  # one image per answer only

    async def test_survives_reopening(self, open_entry_store: EntryStoreFactory) -> None:
        first = open_entry_store()
        version = await put(first, "k1")
        again = open_entry_store()  # a restart, or another worker process
        entry = await again.get("k1")
        assert entry is not None and entry.version == version and entry.artifacts[0].data == BIG

    async def test_every_put_is_a_new_version(self, entry_store: EntryStore) -> None:
        one = await put(entry_store, "k1", b"one")
        two = await put(entry_store, "k1", b"two")
        assert one != two and await entry_store.version("k1") == two
        entry = await entry_store.get("k1")
        assert entry is not None and entry.artifacts[0].data == b"two"
        assert (await entry_store.totals()).entries == 1

    async def test_totals_are_maintained(self, entry_store: EntryStore) -> None:
        await put(entry_store, "a", BIG)
        await put(entry_store, "b", b"small")
        totals = await entry_store.totals()
        assert (totals.entries, totals.bytes) == (2, len(BIG) + 5)
        await put(entry_store, "b", b"longer!")
        assert (await entry_store.totals()).bytes == len(BIG) + 7
        assert await entry_store.delete("a") and not await entry_store.delete("a")
        totals = await entry_store.totals()
        assert (totals.entries, totals.bytes) == (1, 7)

    async def test_list_newest_first_paginated_and_filtered(self, entry_store: EntryStore) -> None:
        for i, (prompt, engine) in enumerate(
            [("a red fox", "e1"), ("a blue whale", "e2"), ("a red barn", "e1"), ("sky", "e2")]
        ):
            await put(entry_store, f"k{i}", f"img{i}".encode(), prompt=prompt, engine=engine)
            await asyncio.sleep(0.002)
        page = await entry_store.list(EntryQuery(limit=2))
        assert page.total == 4 and [m.key for m in page.entries] == ["k3", "k2"]
        rest = await entry_store.list(EntryQuery(limit=2, offset=2))
        assert [m.key for m in rest.entries] == ["k1", "k0"]
        by_engine = await entry_store.list(EntryQuery(engine="e1"))
        assert by_engine.total == 2 and {m.key for m in by_engine.entries} == {"k0", "k2"}
        red = await entry_store.list(EntryQuery(prompt="RED"))  # any case
        assert red.total == 2 and [m.key for m in red.entries] == ["k2", "k0"]
        assert (await entry_store.list(EntryQuery(prompt="blurry"))).total == 0  # negative
        assert (await entry_store.list(EntryQuery(prompt="sk"))).total == 1  # short: no trigram
        assert (await entry_store.list(EntryQuery(route="v2beta/x"))).total == 0
        newest = (await entry_store.list(EntryQuery(limit=1))).entries[0]
        since = await entry_store.list(EntryQuery(since=newest.created_at))
        assert [m.key for m in since.entries] == ["k3"]
        until = await entry_store.list(EntryQuery(until=newest.created_at))
        assert until.total == 3

    async def test_resolve_a_prefix(self, entry_store: EntryStore) -> None:
        await put(entry_store, "abcd1111", b"1")
        await put(entry_store, "abcd2222", b"2")
        assert await entry_store.resolve("abcd1") == ["abcd1111"]
        assert sorted(await entry_store.resolve("abcd")) == ["abcd1111", "abcd2222"]
        assert await entry_store.resolve("ffff") == []

    async def test_hits_are_added(self, open_entry_store: EntryStoreFactory) -> None:
        one, two = open_entry_store(), open_entry_store()
        await put(one, "k1")
        now = time.time()
        await one.add_hits({"k1": (2, now)})
        await two.add_hits({"k1": (3, now + 1), "gone": (1, now)})
        meta = await one.get_meta("k1")
        assert meta is not None and meta.hits == 5 and meta.last_hit_at == pytest.approx(now + 1)

    async def test_purge(self, entry_store: EntryStore) -> None:
        await put(entry_store, "a")
        await put(entry_store, "b", b"x")
        assert await entry_store.purge() == 2
        assert (await entry_store.totals()).entries == 0 and await entry_store.get("a") is None

    async def test_identical_images_are_stored_once(self, entry_store: EntryStore) -> None:
        await put(entry_store, "a", BIG)
        await put(entry_store, "b", BIG)
        assert await entry_store.delete("a")
        entry = await entry_store.get("b")  # the shared blob outlives the first entry
        assert entry is not None and entry.artifacts[0].data == BIG

    async def test_ttl_sets_an_expiry(self, entry_store: EntryStore) -> None:
        meta = await entry_store.put("k", [Artifact(b"x", 1)], summary(), ttl=60)
        assert meta.expires_at is not None and meta.expires_at - meta.created_at == 60
        assert not meta.expired(time.time()) and meta.expired(time.time() + 61)

    async def test_a_reader_never_loses_an_entry_being_replaced(
        self, open_entry_store: EntryStoreFactory
    ) -> None:
        """A get() racing a put() of the same key (a refresh in another worker) reads one
        version or the other, never deletes the fresh entry as if it were damaged."""
        writer, reader = open_entry_store(), open_entry_store()
        await put(writer, "k1", os.urandom(40_000))
        stop = asyncio.Event()
        seen: list[bool] = []

        async def read() -> None:
            while not stop.is_set():
                seen.append(await reader.get("k1") is not None)

        task = asyncio.ensure_future(read())
        lost = 0
        for _ in range(50):
            await put(writer, "k1", os.urandom(40_000))
            lost += await writer.get_meta("k1") is None
        stop.set()
        await task
        assert lost == 0 and seen and all(seen)
