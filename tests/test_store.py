"""The disk store: entries survive reopening, corruption is a miss, counters add up."""

from __future__ import annotations

import time
from pathlib import Path

from cache.store import Artifact, DiskStore, Entry

BIG = bytes(range(256)) * 200  # 51 KiB: stored by diskcache as a file of its own


def entry(key: str = "k1", data: bytes = BIG) -> Entry:
    return Entry(key, [Artifact(data, seed=7)], {"engine": "e", "prompts": [{"text": "p"}]})


def test_put_get_survives_reopen(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    meta = store.put(entry())
    assert meta["bytes"] == len(BIG) and meta["artifacts"][0]["seed"] == 7
    store.close()
    again = DiskStore(tmp_path)
    got = again.get("k1")
    assert got is not None and got.artifacts[0].data == BIG and got.meta["engine"] == "e"
    again.close()


def test_tampered_blob_is_a_miss_and_removed(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    store.put(entry())
    files = list((tmp_path / "entries").rglob("*.val"))
    assert len(files) == 1
    files[0].write_bytes(b"garbage")
    assert store.get("k1") is None
    assert store.get_meta("k1") is None


def test_missing_blob_is_a_miss(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    store.put(entry())
    blobs = [k for k in store.entries.iterkeys() if k[0] == "blob"]
    assert len(blobs) == 1
    store.entries.delete(blobs[0])
    assert store.get("k1") is None


def test_hits_and_stats(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    store.put(entry("a"))
    store.put(entry("b", b"small"))
    store.count("misses", 2)
    store.count("upstream_calls", 2)
    for _ in range(3):
        store.count_hit("a", len(BIG))
    assert store.get_meta("a")["hits"] == 3  # pending hits are visible before a flush
    stats = store.stats()
    assert stats["entries"] == 2 and stats["bytes"] == len(BIG) + 5
    assert (stats["hits"], stats["misses"], stats["upstream_calls"]) == (3, 2, 2)
    assert stats["hit_ratio"] == 0.6
    assert store.get_meta("a")["hits"] == 3 and store.get_meta("a")["last_hit_at"] <= time.time()


def test_list_newest_first_delete_and_purge(tmp_path: Path) -> None:
    store = DiskStore(tmp_path)
    for name in ("old", "mid", "new"):
        store.put(entry(name, name.encode()))
        time.sleep(0.002)
    total, page = store.list_meta(limit=2)
    assert total == 3 and [m["key"] for m in page] == ["new", "mid"]
    assert [m["key"] for m in store.list_meta(limit=2, offset=2)[1]] == ["old"]
    assert store.delete("mid") and not store.delete("mid")
    assert store.purge() == 2 and store.list_meta()[0] == 0


def test_counters_from_two_store_objects_add_up(tmp_path: Path) -> None:
    """Two worker processes each keep their own DiskStore on the same folder."""
    one, two = DiskStore(tmp_path), DiskStore(tmp_path)
    one.count("misses")
    two.count("misses", 4)
    one.flush()
    assert two.stats()["misses"] == 5


def test_memory_tier_serves_current_entries_only(tmp_path: Path) -> None:
    store = DiskStore(tmp_path, memory_bytes=10 * 1024 * 1024)
    assert store.held("k1") == (None, False)
    store.put(entry())
    held, on_disk = store.held("k1")
    assert held is not None and held.artifacts[0].data == BIG and on_disk
    other = DiskStore(tmp_path)  # another worker process replaces the entry on disk
    other.put(entry(data=b"newer"))
    assert store.held("k1") == (None, True)  # the memory copy is stale now
    assert store.get("k1").artifacts[0].data == b"newer"
    other.delete("k1")
    assert store.held("k1") == (None, False) and store.get("k1") is None


def test_a_reader_never_loses_an_entry_being_replaced(tmp_path: Path) -> None:
    """A get() racing a put() of the same key (a refresh in another worker) must read one
    version or the other, never delete the fresh entry as if it were damaged."""
    import os
    import threading

    store = DiskStore(tmp_path)
    store.put(entry(data=os.urandom(40_000)))
    stop = threading.Event()
    read = []

    def reader() -> None:
        while not stop.is_set():
            read.append(store.get("k1") is not None)

    thread = threading.Thread(target=reader)
    thread.start()
    lost = 0
    for _ in range(100):
        store.put(entry(data=os.urandom(40_000)))
        lost += store.get_meta("k1") is None
    stop.set()
    thread.join()
    assert lost == 0 and read and all(read)
    assert len([k for k in store.entries.iterkeys() if k[0] == "blob"]) == 1  # old versions gone
