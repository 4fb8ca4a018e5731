"""RedisEntryStore: the EntryStore shared by every replica: the index in Redis
(cache.redis.index), the bytes in any BlobStore (Redis itself, or S3).

As on the local backend: a put writes the blobs first (content-addressed: an image already
stored costs nothing), then the index in one script, the commit point; the old version's
blobs are deleted once no entry refers to them, and a put that fails deletes the blobs it
wrote if nothing refers to them. Reads check every image against its SHA-256 (once per
process per digest): missing or damaged bytes make the entry a miss and remove it, unless
another replica replaced it meanwhile. The store keeps its images within `size_limit`
bytes by deleting the oldest entries.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from cache.interfaces import BlobStore, EntryPage, EntryQuery, StoreError, StoreTotals
from cache.model import (
    Artifact,
    Entry,
    EntryMeta,
    ImageFile,
    Source,
    VerifiedDigests,
    prompt_text,
)
from cache.redis.connection import RedisConnection
from cache.redis.index import RedisIndex

log = logging.getLogger("cache.redis")

# A read that found the bytes gone because another replica replaced the entry reads the
# new version; a writer replacing one key in a tight loop can win a few races in a row.
READ_ATTEMPTS = 10
EVICT_BATCH = 64
PURGE_BATCH = 500


class RedisEntryStore:
    def __init__(
        self,
        connection: RedisConnection,
        blobs: BlobStore,
        *,
        size_limit: int = 10 * 1024**3,
    ) -> None:
        self.connection = connection.share()
        self.where = connection.where
        self.blobs = blobs
        self.size_limit = size_limit
        self.index = RedisIndex(connection)
        self._verified = VerifiedDigests()
        self._failing_since: float | None = None

    def ready_for(self, nbytes: int) -> bool:
        """Whether a put is expected to succeed: the last write did not fail (Redis keeps
        no free-space figure worth a round trip on every miss)."""
        return self._failing_since is None

    def _note(self, ok: bool) -> None:
        self._failing_since = None if ok else (self._failing_since or time.time())

    async def version(self, key: str) -> str | None:
        with self.connection.store_errors():
            return await self.index.version(key)

    async def get_meta(self, key: str) -> EntryMeta | None:
        with self.connection.store_errors():
            return await self.index.meta(key)

    async def open_image(self, key: str) -> ImageFile | None:
        """Images here are values in a BlobStore, not files of their own: always read."""
        return None

    async def get(self, key: str) -> Entry | None:
        for _ in range(READ_ATTEMPTS):
            meta = await self.get_meta(key)
            if meta is None:
                return None
            artifacts = await self._read_artifacts(meta)
            if artifacts is not None:
                return Entry(meta, artifacts)
            # Missing or damaged, unless another replica has replaced the entry since.
            with self.connection.store_errors():
                deleted, freed = await self.index.delete(key, meta.version)
            if deleted:
                log.warning("cache entry %s had missing or damaged bytes: removed", key[:16])
                await self._drop(freed)
                return None
        return None

    async def _read_artifacts(self, meta: EntryMeta) -> list[Artifact] | None:
        datas = await asyncio.gather(*(self.blobs.get(a.sha256) for a in meta.artifacts))
        artifacts = []
        for info, data in zip(meta.artifacts, datas, strict=True):
            artifact = self._verified.artifact(info, data)
            if artifact is None:
                return None
            artifacts.append(artifact)
        return artifacts

    async def put(
        self,
        key: str,
        artifacts: Sequence[Artifact],
        summary: Mapping[str, Any],
        *,
        source: Source = "upstream",
        ttl: float | None = None,
    ) -> EntryMeta:
        meta = EntryMeta.fresh(key, artifacts, summary, source=source, ttl=ttl)
        written: list[str] = []
        try:
            for artifact in artifacts:
                if artifact.sha256 not in written:
                    await self.blobs.put(artifact.sha256, artifact.data)
                    written.append(artifact.sha256)
            with self.connection.store_errors():
                freed = await self.index.put(meta, prompt_text(summary))
        except BaseException:
            self._note(False)
            await asyncio.shield(self._drop_unreferenced(written))
            raise
        self._note(True)
        await self._drop([sha for sha in freed if sha not in written])
        await self._evict()
        return meta

    async def _drop(self, digests: Sequence[str]) -> None:
        """Delete blobs the index said no entry uses any more (best effort: an orphan
        costs space, never a wrong answer)."""
        for sha in digests:
            try:
                await self.blobs.delete(sha)
            except StoreError:
                log.debug("could not delete blob %s", sha[:16], exc_info=True)
            self._verified.forget(sha)

    async def _drop_unreferenced(self, digests: Sequence[str]) -> None:
        for sha in digests:
            try:
                if not await self.index.referenced(sha):
                    await self._drop([sha])
            except Exception:
                log.debug("could not delete blob %s", sha[:16], exc_info=True)

    async def _evict(self) -> None:
        """Delete the oldest entries while the images exceed `size_limit`."""
        with self.connection.store_errors():
            while (await self.index.totals())[1] > self.size_limit:
                oldest = await self.index.oldest(EVICT_BATCH)
                if not oldest:
                    return
                for key in oldest:
                    await self._delete(key)
                    if (await self.index.totals())[1] <= self.size_limit:
                        return

    async def _delete(self, key: str) -> bool:
        deleted, freed = await self.index.delete(key)
        await self._drop(freed)
        return deleted

    async def delete(self, key: str) -> bool:
        with self.connection.store_errors():
            return await self._delete(key)

    async def list(self, query: EntryQuery) -> EntryPage:
        with self.connection.store_errors():
            total, entries = await self.index.page(query)
        return EntryPage(total, entries)

    async def resolve(self, prefix: str, limit: int = 2) -> builtins.list[str]:
        with self.connection.store_errors():
            return await self.index.resolve(prefix, limit)

    async def totals(self) -> StoreTotals:
        """Entries and image bytes, kept by the index's scripts. `disk_bytes` is 0
        (unknown): Redis reports its memory for the whole server, not for one prefix."""
        with self.connection.store_errors():
            entries, nbytes = await self.index.totals()
        return StoreTotals(entries=entries, bytes=nbytes, disk_bytes=0)

    async def purge(self) -> int:
        count = 0
        with self.connection.store_errors():
            while True:
                keys = await self.index.oldest(PURGE_BATCH)
                if not keys:
                    break
                for key in keys:
                    count += await self._delete(key)
        self._verified.clear()
        return count

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        if hits:
            with self.connection.store_errors():
                await self.index.add_hits(hits)

    async def close(self) -> None:
        await self.blobs.close()
        await self.connection.close()
