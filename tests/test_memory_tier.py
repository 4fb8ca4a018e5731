from __future__ import annotations

from pathlib import Path

import pytest

from cache.local import LocalEntryStore
from cache.memory import MemoryTier, TieredEntryStore, footprint
from cache.model import Artifact, ArtifactInfo, Entry, EntryMeta


def entry(key: str, size: int, version: str = "v1", summary: dict | None = None) -> Entry:
    artifact = Artifact(b"x" * size, seed=1)
    meta = EntryMeta(key, version, 1.0, (ArtifactInfo.of(artifact),), summary or {})
    return Entry(meta, [artifact])


def test_lru_stays_within_its_byte_budget() -> None:
    one = footprint(entry("a", 300))
    tier = MemoryTier(max_bytes=one * 2)
    for key in "abc":
        tier.put(entry(key, 300))
    assert tier.used <= tier.max_bytes and len(tier) == 2
    assert tier.get("a", "v1") is None  # oldest evicted
    assert tier.get("b", "v1") is not None  # touching b makes c the oldest
    tier.put(entry("d", 300))
    assert tier.get("c", "v1") is None and tier.get("b", "v1") is not None


def test_an_entry_replaced_or_deleted_in_the_store_is_not_served() -> None:
    tier = MemoryTier(max_bytes=10_000)
    tier.put(entry("a", 10, version="v1"))
    assert tier.get("a", version="v2") is None  # the store holds a newer version
    assert tier.get("a", version="v1") is None  # and the stale copy is gone
    tier.put(entry("b", 10))
    assert tier.get("b", version=None) is None  # deleted in the store
    assert tier.used == 0


def test_too_large_entries_are_not_held() -> None:
    tier = MemoryTier(max_bytes=100)
    tier.put(entry("big", 1000))
    assert len(tier) == 0 and tier.used == 0


def test_metadata_counts_against_the_budget() -> None:
    plain = footprint(entry("a", 10))
    heavy = footprint(entry("a", 10, summary={"params": {"extras": "x" * 50_000}}))
    assert heavy - plain >= 50_000


@pytest.mark.anyio
async def test_the_tier_serves_the_stores_current_version_only(tmp_path: Path) -> None:
    store = TieredEntryStore(LocalEntryStore(tmp_path), MemoryTier(10 * 1024 * 1024))
    other = LocalEntryStore(tmp_path)  # another worker process, on the same folder
    await store.put("k1", [Artifact(b"first", 1)], {"engine": "e"})
    assert store.tier.peek("k1") is not None
    await other.put("k1", [Artifact(b"newer", 1)], {"engine": "e"})
    got = await store.get("k1")
    assert got is not None and got.artifacts[0].data == b"newer"
    await other.delete("k1")
    assert await store.get("k1") is None and store.tier.peek("k1") is None
    await store.close()
    await other.close()
