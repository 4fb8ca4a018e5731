from __future__ import annotations

from cache.memory import MemoryTier, footprint
from cache.store import Artifact, Entry


def entry(key: str, size: int, created_at: float = 1.0) -> Entry:
    return Entry(key, [Artifact(b"x" * size, seed=1)], {"key": key, "created_at": created_at})


def test_lru_stays_within_its_byte_budget() -> None:
    one = footprint(entry("a", 300))
    tier = MemoryTier(max_bytes=one * 2)
    for key in "abc":
        tier.put(entry(key, 300))
    assert tier.used <= tier.max_bytes and len(tier) == 2
    assert tier.get("a", 1.0) is None  # oldest evicted
    assert tier.get("b", 1.0) is not None  # touching b makes c the oldest
    tier.put(entry("d", 300))
    assert tier.get("c", 1.0) is None and tier.get("b", 1.0) is not None


def test_entry_replaced_or_deleted_on_disk_is_not_served() -> None:
    tier = MemoryTier(max_bytes=10_000)
    tier.put(entry("a", 10, created_at=1.0))
    assert tier.get("a", created_at=2.0) is None  # disk holds a newer entry
    assert tier.get("a", created_at=1.0) is None  # and the stale copy is gone
    tier.put(entry("b", 10))
    assert tier.get("b", created_at=None) is None  # deleted on disk
    assert tier.used == 0


def test_too_large_entries_are_not_held() -> None:
    tier = MemoryTier(max_bytes=100)
    tier.put(entry("big", 1000))
    assert len(tier) == 0 and tier.used == 0
