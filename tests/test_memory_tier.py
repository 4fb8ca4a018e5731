from __future__ import annotations

from pathlib import Path

import pytest

from cache.local import LocalEntryStore
from cache.memory import MemoryTier, TieredEntryStore, footprint
from cache.model import Artifact, ArtifactInfo, Entry, EntryMeta, ImageFile
from gateway.http.image_answer import ImageFileAnswer


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


BIG = bytes(range(256)) * 200  # a blob file of its own


@pytest.mark.anyio
async def test_get_image_prefers_memory_then_the_file_then_a_read(tmp_path: Path) -> None:
    store = LocalEntryStore(tmp_path)
    tiered = TieredEntryStore(store, MemoryTier(max_bytes=10 * 1024 * 1024))
    await tiered.put("k", [Artifact(BIG, seed=1)], {})
    held = await tiered.get_image("k")
    assert isinstance(held, Entry)  # just stored: held in memory, already paid for
    tiered.tier.clear()
    first = await tiered.get_image("k")
    assert isinstance(first, Entry) and first.artifacts[0].data == BIG  # read, and checked
    tiered.tier.clear()
    image = await tiered.get_image("k")
    assert isinstance(image, ImageFile) and image.version == first.version
    image.close()
    assert len(tiered.tier) == 0  # a file sent is not added to the tier
    await tiered.delete("k")
    assert await tiered.get_image("k") is None
    await tiered.close()


@pytest.mark.anyio
async def test_image_file_answer_without_the_server_extension_reads_the_file(
    tmp_path: Path,
) -> None:
    """Under a server (or test client) without zero-copy send, the same answer: read once."""
    path = tmp_path / "image.png"
    path.write_bytes(BIG)
    artifact = Artifact(BIG, seed=9, finish_reason="SUCCESS")
    meta = EntryMeta("k", "v1", 1.0, (ArtifactInfo.of(artifact),), {})
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    for method in ("GET", "HEAD"):
        file = path.open("rb")
        answer = ImageFileAnswer(ImageFile(meta, file), {"X-Cache": "HIT"})
        await answer({"type": "http", "method": method, "extensions": {}}, receive, send)
        assert file.closed
    get_start, get_body, head_start, head_body = sent
    assert get_body["body"] == BIG and head_body["body"] == b""
    headers = dict(get_start["headers"])
    assert headers[b"content-length"] == str(len(BIG)).encode() and headers[b"seed"] == b"9"
    assert headers[b"x-cache"] == b"HIT" and headers[b"content-type"] == b"image/png"
    assert head_start["headers"] == get_start["headers"]
    path.write_bytes(BIG[:-1])  # shorter than the answer says: an error, never a short body
    answer = ImageFileAnswer(ImageFile(meta, path.open("rb")), {})
    with pytest.raises(OSError, match="ended after"):
        await answer({"type": "http", "method": "GET", "extensions": {}}, receive, send)
