"""LocalEntryStore: the EntryStore of the cache folder (index in SQLite, blobs in diskcache).

A put writes the blobs first (content-addressed, so an image already stored by another
entry costs nothing), then the index row in one transaction: the row is the commit point,
and a reader never sees an entry whose bytes are not there yet. The previous version's
blobs are deleted afterwards, once no entry refers to them; a put that fails deletes the
blobs it wrote, so a full disk leaves no orphan behind. The store keeps itself within
`size_limit` bytes of images by deleting the oldest entries.

Reads check every image against its SHA-256, once per process per digest: a blob that is
missing or damaged makes the entry a miss, and removes it, unless another process replaced
the entry meanwhile (then the read is simply retried).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.lowlevel
import anyio.to_thread

from cache.interfaces import EntryPage, EntryQuery, StoreError, StoreTotals
from cache.local.blobs import NOT_READY, DiskBlobStore, NotReady
from cache.local.errors import store_errors
from cache.local.index import Index
from cache.local.legacy import migrate
from cache.model import (
    Artifact,
    Entry,
    EntryMeta,
    ImageFile,
    Source,
    VerifiedDigests,
    prompt_text,
)

log = logging.getLogger("cache.local")

T = TypeVar("T")

READ_ATTEMPTS = 3
CLOSE_WAIT_SECONDS = 30.0
EVICT_BATCH = 64
# A put is expected to fail when the folder's file system has less free space than the
# images plus this much (SQLite's journal, diskcache's row): see `ready_for`.
FREE_SPACE_MARGIN = 4 * 1024 * 1024


class LocalEntryStore:
    def __init__(
        self, directory: str | os.PathLike[str], *, size_limit: int = 10 * 1024**3
    ) -> None:
        self.directory = Path(directory)
        self.where = str(self.directory)
        self.size_limit = size_limit
        with store_errors(self.where):
            self.directory.mkdir(parents=True, exist_ok=True)
            self.index = Index(self.directory / "index.sqlite3")
        self.blobs = DiskBlobStore(self.directory / "blobs")
        with store_errors(self.where):
            migrate(self.directory, self.index, self.blobs)
        self._verified = VerifiedDigests()
        self._failing_since: float | None = None
        # Operations under way in worker threads; close() waits for them, since closing a
        # SQLite connection another thread is using crashes the process.
        self._active = 0
        self._closed = False
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        with self._idle:
            if self._closed:
                raise StoreError("the store is closed", where=self.where)
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    # -- health ---------------------------------------------------------------------------

    def ready_for(self, nbytes: int) -> bool:
        """Whether a put of `nbytes` is expected to succeed now: the file system has room
        and is writable, and the last write did not fail. Costs one statvfs call."""
        if self._failing_since is not None:
            return False
        try:
            fs = os.statvfs(self.directory)
        except OSError:
            return False
        if fs.f_flag & os.ST_RDONLY:
            return False
        return fs.f_bavail * fs.f_frsize >= nbytes + FREE_SPACE_MARGIN

    def _note(self, ok: bool) -> None:
        self._failing_since = None if ok else (self._failing_since or time.time())

    # -- blocking implementation (run in worker threads) ----------------------------------

    def _read(self, key: str) -> Entry | None:
        for _ in range(READ_ATTEMPTS):
            meta = self.index.meta(key)
            if meta is None:
                return None
            artifacts = self._read_artifacts(meta)
            if artifacts is not None:
                return Entry(meta, artifacts)
            with self.index.write() as db:
                # Damaged or missing, unless another process has replaced the entry since.
                gone = Index.delete(db, key, meta.version)
            if gone:
                log.warning("cache entry %s had missing or damaged bytes: removed", key[:16])
                self._drop_unreferenced(gone)
                return None
        return None

    def _read_now(self, key: str) -> Entry | NotReady | None:
        """The entry, on the event loop, when nothing in it waits: its row (a small indexed
        read, as `version`), bytes already in the page cache and digests already checked.
        NOT_READY otherwise, and for anything amiss: `_read`, in a thread, deals with it."""
        meta = self.index.meta(key)
        if meta is None:
            return None
        artifacts = []
        for info in meta.artifacts:
            if not self._verified.known(info.sha256):
                return NOT_READY
            data = self.blobs.get_now(info.sha256)
            if data is None or data is NOT_READY:
                return NOT_READY
            artifact = self._verified.artifact(info, data)
            if artifact is None:
                return NOT_READY
            artifacts.append(artifact)
        return Entry(meta, artifacts)

    def _read_artifacts(self, meta: EntryMeta) -> list[Artifact] | None:
        artifacts = []
        for info in meta.artifacts:
            artifact = self._verified.artifact(info, self.blobs.get_sync(info.sha256))
            if artifact is None:
                return None
            artifacts.append(artifact)
        return artifacts

    def _put(
        self,
        key: str,
        artifacts: Sequence[Artifact],
        summary: Mapping[str, Any],
        source: Source,
        ttl: float | None,
    ) -> EntryMeta:
        meta = EntryMeta.fresh(key, artifacts, summary, source=source, ttl=ttl)
        written: list[str] = []
        try:
            for artifact in artifacts:
                if artifact.sha256 not in written:
                    self.blobs.put_sync(artifact.sha256, artifact.data)
                    written.append(artifact.sha256)
            with store_errors(self.where), self.index.write() as db:
                old = Index.delete(db, key)
                Index.insert(db, meta, prompt_text(summary))
        except BaseException:
            self._note(False)
            self._drop_unreferenced(written)
            raise
        self._note(True)
        self._drop_unreferenced([sha for sha in old if sha not in written])
        self._evict()
        return meta

    def _drop_unreferenced(self, digests: Sequence[str]) -> None:
        for sha in digests:
            try:
                if not self.index.referenced(sha):
                    self.blobs.delete_sync(sha)
                    self._verified.forget(sha)
            except Exception:  # best effort: a later sweep of the same digest retries
                log.debug("could not delete blob %s", sha[:16], exc_info=True)

    def _delete(self, key: str) -> bool:
        with store_errors(self.where), self.index.write() as db:
            gone = Index.delete(db, key)
        self._drop_unreferenced(gone)
        return bool(gone)

    def _evict(self) -> None:
        """Delete the oldest entries while the images exceed `size_limit`."""
        while self.index.totals().get("bytes", 0) > self.size_limit:
            oldest = self.index.oldest(EVICT_BATCH)
            if not oldest:
                return
            for key in oldest:
                self._delete(key)
                if self.index.totals().get("bytes", 0) <= self.size_limit:
                    return

    def _list(self, query: EntryQuery) -> EntryPage:
        with store_errors(self.where):
            total, entries = self.index.page(query, self.index.totals().get("entries", 0))
        return EntryPage(total, entries)

    def _totals(self) -> StoreTotals:
        with store_errors(self.where):
            totals = self.index.totals()
            index_bytes = sum(
                p.stat().st_size for p in self.directory.glob("index.sqlite3*") if p.exists()
            )
            return StoreTotals(
                entries=totals.get("entries", 0),
                bytes=totals.get("bytes", 0),
                disk_bytes=self.blobs.volume() + index_bytes,
            )

    def _purge(self) -> int:
        with store_errors(self.where):
            with self.index.write() as db:
                count = int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
                db.execute("DELETE FROM entries")
            self.blobs.clear_sync()
        self._verified.clear()
        return count

    def _add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        with store_errors(self.where), self.index.write() as db:
            db.executemany(
                "UPDATE entries SET hits = hits + ?,"
                " last_hit_at = max(coalesce(last_hit_at, 0), ?) WHERE key = ?",
                [(count, last, key) for key, (count, last) in hits.items()],
            )

    # -- the EntryStore protocol ----------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            with self._operation(), store_errors(self.where):
                return fn(*args)

        return await anyio.to_thread.run_sync(call)

    async def version(self, key: str) -> str | None:
        # One indexed read of a small row: measured cheaper than a thread hop, so it runs
        # on the event loop (it is on every hit).
        with self._operation(), store_errors(self.where):
            return self.index.version(key)

    async def get(self, key: str) -> Entry | None:
        with self._operation(), store_errors(self.where):
            entry = self._read_now(key)
        if entry is not NOT_READY:
            await anyio.lowlevel.checkpoint()
            return entry
        return await self._run(self._read, key)

    async def get_meta(self, key: str) -> EntryMeta | None:
        with self._operation(), store_errors(self.where):
            return self.index.meta(key)

    async def open_image(self, key: str) -> ImageFile | None:
        # On the event loop, as `_read_now`: the index row and an open, nothing read.
        with self._operation(), store_errors(self.where):
            meta = self.index.meta(key)
            if meta is None or len(meta.artifacts) != 1:
                return None
            info = meta.artifacts[0]
            if not self._verified.known(info.sha256):
                return None  # `get` checks it first
            file = self.blobs.open_now(info.sha256, info.bytes)
        return None if file is None else ImageFile(meta, file)

    async def put(
        self,
        key: str,
        artifacts: Sequence[Artifact],
        summary: Mapping[str, Any],
        *,
        source: Source = "upstream",
        ttl: float | None = None,
    ) -> EntryMeta:
        return await self._run(self._put, key, artifacts, summary, source, ttl)

    async def delete(self, key: str) -> bool:
        return await self._run(self._delete, key)

    async def list(self, query: EntryQuery) -> EntryPage:
        return await self._run(self._list, query)

    async def resolve(self, prefix: str, limit: int = 2) -> builtins.list[str]:
        with self._operation(), store_errors(self.where):
            return self.index.resolve(prefix, limit)

    async def totals(self) -> StoreTotals:
        return await self._run(self._totals)

    async def purge(self) -> int:
        return await self._run(self._purge)

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        if hits:
            await self._run(self._add_hits, dict(hits))

    async def close(self) -> None:
        await anyio.to_thread.run_sync(self._close)

    def _close(self, timeout: float = CLOSE_WAIT_SECONDS) -> None:
        with self._idle:
            self._closed = True
            self._idle.wait_for(lambda: self._active == 0, timeout)
        self.index.close()
        self.blobs.cache.close()
