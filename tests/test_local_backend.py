"""What only the local backend (cache folder: SQLite index, diskcache blobs) must get
right: damaged bytes, failed writes, the size limit, and opening a bad folder."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cache.interfaces import EntryQuery, StoreError
from cache.local import LocalEntryStore
from cache.local.blobs import NOT_READY
from cache.model import Artifact
from gateway.backends import BackendError, open_backends
from gateway.config import Settings

pytestmark = pytest.mark.anyio
BIG = bytes(range(256)) * 200  # 51 KiB: a file of its own


async def test_a_tampered_blob_is_a_miss_and_the_entry_is_removed(tmp_path: Path) -> None:
    store = LocalEntryStore(tmp_path)
    await store.put("k1", [Artifact(BIG, 7)], {})
    files = store.blobs.files()
    assert len(files) == 1
    files[0].write_bytes(b"garbage")
    assert await store.get("k1") is None and await store.get_meta("k1") is None
    assert (await store.totals()).entries == 0
    await store.close()


async def test_a_missing_blob_is_a_miss(tmp_path: Path) -> None:
    store = LocalEntryStore(tmp_path)
    meta = await store.put("k1", [Artifact(BIG, 7)], {})
    store.blobs.delete_sync(meta.artifacts[0].sha256)
    assert await store.get("k1") is None
    await store.close()


async def test_replacing_an_entry_leaves_one_blob(tmp_path: Path) -> None:
    store = LocalEntryStore(tmp_path)
    for i in range(5):
        await store.put("k1", [Artifact(BIG + bytes([i]), 7)], {})
    assert len(store.blobs.files()) == 1
    await store.close()


async def test_a_failed_index_write_leaves_no_orphan_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalEntryStore(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("cache.local.index.Index.insert", staticmethod(full))
    with pytest.raises(StoreError) as caught:
        await store.put("k1", [Artifact(BIG, 7)], {})
    assert "disk is full" in str(caught.value) and caught.value.where == str(tmp_path)
    assert store.blobs.files() == [] and not store.ready_for(1)
    monkeypatch.undo()
    await store.put("k1", [Artifact(BIG, 7)], {})  # recovers by itself
    assert store.ready_for(1) and (await store.totals()).entries == 1
    await store.close()


async def test_a_blob_write_that_fails_halfway_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalEntryStore(tmp_path)
    disk = store.blobs.cache.disk
    real_write = disk._write

    def write_half(full_path: str, iterator: object, mode: str, encoding: str | None = None) -> int:
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        with open(full_path, "xb") as out:
            out.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk, "_write", write_half)
    with pytest.raises(StoreError):
        await store.put("k1", [Artifact(BIG, 7)], {})
    assert store.blobs.files() == []
    monkeypatch.setattr(disk, "_write", real_write)
    await store.close()


async def test_the_oldest_entries_go_beyond_the_size_limit(tmp_path: Path) -> None:
    store = LocalEntryStore(tmp_path, size_limit=3 * (len(BIG) + 1))
    for i in range(5):
        await store.put(f"k{i}", [Artifact(BIG + bytes([i]), i)], {})
    totals = await store.totals()
    assert totals.entries == 3 and totals.bytes <= 3 * len(BIG) + 3
    page = await store.list(EntryQuery())
    assert [m.key for m in page.entries] == ["k4", "k3", "k2"]
    assert len(store.blobs.files()) == 3  # evicted entries' bytes are gone too
    await store.close()


def test_a_corrupt_index_is_one_clear_error(tmp_path: Path, settings: Settings) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "index.sqlite3").write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackendError) as caught:
        open_backends(settings.replace(cache={"dir": str(folder)}))
    message = str(caught.value)
    assert str(folder) in message and "STABILITY_GATEWAY_CACHE_DIR" in message
    assert "\n" not in message


async def test_a_folder_of_the_first_layout_is_brought_over(tmp_path: Path) -> None:
    """What the first DiskStore wrote: the entries (and hits) come over, damaged ones not."""
    import hashlib

    import diskcache

    old = diskcache.Cache(str(tmp_path / "entries"))
    for key, data, damaged in (("a" * 64, BIG, False), ("b" * 64, b"tiny", False),
                               ("c" * 64, BIG[:-1] + b"!", True)):  # fmt: skip
        digest = hashlib.sha256(BIG if damaged else data).hexdigest()
        old.set(("meta", key), {
            "key": key, "engine": "e1", "route": "v1/text-to-image", "created_at": 100.0,
            "version": "v0", "bytes": len(data), "source": "upstream", "width": 8,
            "prompts": [{"text": f"old {key[0]}", "weight": 1}],
            "artifacts": [{"seed": 3, "finish_reason": "SUCCESS", "media_type": "image/png",
                           "bytes": len(data), "sha256": digest}],
        })  # fmt: skip
        old.set(("blob", key, "v0", 0), data)
    old.set(("hits", "a" * 64), (4, 150.0))
    old.close()
    store = LocalEntryStore(tmp_path)
    entry = await store.get("a" * 64)
    assert entry is not None and entry.artifacts[0].data == BIG and entry.meta.hits == 4
    assert entry.meta.summary["prompts"][0]["text"] == "old a" and entry.meta.created_at == 100
    assert await store.get("b" * 64) is not None and await store.get("c" * 64) is None
    assert (await store.totals()).entries == 2
    assert not (tmp_path / "entries").exists() and (tmp_path / "entries.migrated").is_dir()
    await store.close()
    again = LocalEntryStore(tmp_path)  # once only
    assert (await again.totals()).entries == 2
    await again.close()


def _count_thread_hops(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every call LocalEntryStore makes to a worker thread, recorded (and still made)."""
    import anyio.to_thread

    import cache.local.entries as entries

    calls: list[object] = []
    real = anyio.to_thread.run_sync

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(entries.anyio.to_thread, "run_sync", counted)
    return calls


def _drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="preadv2 RWF_NOWAIT is Linux's")
async def test_a_read_waits_for_the_disk_only_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalEntryStore(tmp_path)
    meta = await store.put("k1", [Artifact(BIG, 7)], {})
    sha = meta.artifacts[0].sha256
    hops = _count_thread_hops(monkeypatch)

    # First read in this process: the digest is checked, off the event loop.
    first = await store.get("k1")
    assert first is not None and first.artifacts[0].data == BIG and len(hops) == 1

    # Bytes in the page cache, digest known: read on the loop, no thread hop.
    again = await store.get("k1")
    assert again is not None and again.artifacts[0].data == BIG and len(hops) == 1

    # Bytes the kernel must fetch from the device: back to a worker thread, same answer.
    _drop_from_page_cache(store.blobs.files()[0])
    if isinstance(store.blobs.get_now(sha), bytes):
        pytest.skip("this file system keeps the file's pages after POSIX_FADV_DONTNEED")
    _drop_from_page_cache(store.blobs.files()[0])
    cold = await store.get("k1")
    assert cold is not None and cold.artifacts[0].data == BIG and len(hops) == 2
    await store.close()


async def test_a_tampered_blob_read_on_the_loop_is_still_refused(tmp_path: Path) -> None:
    store = LocalEntryStore(tmp_path)
    await store.put("k1", [Artifact(BIG, 7)], {})
    assert await store.get("k1") is not None  # digest checked once
    store.blobs.files()[0].write_bytes(b"garbage")  # a different length: refused on every read
    assert await store.get("k1") is None and await store.get_meta("k1") is None
    await store.close()


async def test_an_image_file_is_handed_out_only_once_its_bytes_were_checked(
    tmp_path: Path,
) -> None:
    store = LocalEntryStore(tmp_path)
    await store.put("k1", [Artifact(BIG, 7)], {})
    await store.put("small", [Artifact(b"\x89PNG tiny", 7)], {})  # kept in SQLite's row
    assert await store.open_image("k1") is None  # not read back yet: `get` checks it first
    assert await store.get("k1") is not None and await store.get("small") is not None
    image = await store.open_image("k1")
    assert image is not None and image.info.seed == 7
    with image.file:
        assert image.file.read() == BIG
    assert await store.open_image("small") is None  # no file of its own to send
    store.blobs.files()[0].write_bytes(BIG[:-1])  # truncated behind the store's back
    assert await store.open_image("k1") is None
    assert await store.get("k1") is None  # and the read path refuses it too
    await store.close()


async def test_a_file_system_without_nowait_reads_is_asked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalEntryStore(tmp_path)
    meta = await store.put("k1", [Artifact(BIG, 7)], {})
    assert await store.get("k1") is not None  # digest checked once
    attempts = []

    def unsupported(*args: Any) -> int:
        attempts.append(args)
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "preadv", unsupported)
    for _ in range(3):  # every read still answers, through the worker thread
        entry = await store.get("k1")
        assert entry is not None and entry.artifacts[0].data == BIG
    assert len(attempts) == 1
    assert store.blobs.get_now(meta.artifacts[0].sha256) is NOT_READY and len(attempts) == 1
    await store.close()
