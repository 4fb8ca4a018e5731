"""A bounded in-memory tier of hot entries, in front of any EntryStore.

A hit on an entry not held here costs a read of its images (from the cache folder, Redis or
S3), except an answer that is the image itself from the cache folder: the server sends that
from the blob's file (gateway.http.zerocopy, `get_image`). Hot entries are better answered
from memory. The tier is an LRU bounded by bytes: the images, room for one base64
rendering of each (the gateway keeps a JSON answer ready for entries held here), and the
entry's metadata.

Each worker process (and each replica) has its own tier, while another one may delete or
replace an entry in the shared store. So a memory copy is served only while the store
still names the same version (`EntryStore.version`: one small read, no image bytes): a
refreshed, deleted or purged entry is never served from a stale copy.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from cache.interfaces import EntryPage, EntryQuery, EntryStore, StoreTotals
from cache.model import Artifact, Entry, EntryMeta, ImageFile, Source


def footprint(entry: Entry) -> int:
    """Bytes an entry may come to hold: images, one base64 rendering of each, metadata."""
    images = sum(len(a.data) + (len(a.data) + 2) // 3 * 4 for a in entry.artifacts)
    return images + len(json.dumps(entry.meta.summary, default=str)) + 512


class MemoryTier:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._entries: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, version: str | None) -> Entry | None:
        """The entry, if held and still the stored version."""
        with self._lock:
            held = self._entries.get(key)
            if held is None:
                return None
            entry, _ = held
            if version is None or entry.version != version:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, entry: Entry) -> None:
        size = footprint(entry)
        with self._lock:
            self._drop(entry.key)
            if size > self.max_bytes:
                return  # larger than the whole tier: serve it from the store
            self._entries[entry.key] = (entry, size)
            self.used += size
            while self.used > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def peek(self, key: str) -> Entry | None:
        """The held copy, whatever the store says now (a fallback when it is unreachable)."""
        with self._lock:
            held = self._entries.get(key)
        return held[0] if held else None

    def discard(self, key: str) -> None:
        with self._lock:
            self._drop(key)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.used = 0

    def _drop(self, key: str) -> None:
        held = self._entries.pop(key, None)
        if held is not None:
            self.used -= held[1]


class TieredEntryStore:
    """An EntryStore with a MemoryTier in front: hits on hot entries cost one version
    lookup and no image read. Every write goes through to the store."""

    def __init__(self, store: EntryStore, tier: MemoryTier) -> None:
        self.store = store
        self.tier = tier
        self.where = store.where

    def ready_for(self, nbytes: int) -> bool:
        return self.store.ready_for(nbytes)

    async def version(self, key: str) -> str | None:
        return await self.store.version(key)

    async def get(self, key: str) -> Entry | None:
        found = await self._lookup(key, by_file=False)
        assert not isinstance(found, ImageFile)
        return found

    async def get_meta(self, key: str) -> EntryMeta | None:
        return await self.store.get_meta(key)

    async def open_image(self, key: str) -> ImageFile | None:
        return await self.store.open_image(key)

    async def get_image(self, key: str) -> Entry | ImageFile | None:
        """For an answer that is the image itself: the memory copy when one is held (it is
        already paid for), else the image as an open file when the store can give one (the
        server sends it with sendfile: nothing read, nothing added to the tier), else the
        entry as `get` reads it."""
        return await self._lookup(key, by_file=True)

    async def _lookup(self, key: str, *, by_file: bool) -> Entry | ImageFile | None:
        version = await self.store.version(key)
        if version is None:
            self.tier.discard(key)
            return None
        held = self.tier.get(key, version)
        if held is not None:
            return held
        if by_file:
            image = await self.store.open_image(key)
            if image is not None:
                if image.version == version:
                    return image
                image.close()  # replaced since: read the new one
        entry = await self.store.get(key)
        if entry is not None:
            self.tier.put(entry)
        return entry

    async def put(
        self,
        key: str,
        artifacts: Sequence[Artifact],
        summary: Mapping[str, Any],
        *,
        source: Source = "upstream",
        ttl: float | None = None,
    ) -> EntryMeta:
        meta = await self.store.put(key, artifacts, summary, source=source, ttl=ttl)
        self.tier.put(Entry(meta, list(artifacts)))
        return meta

    async def delete(self, key: str) -> bool:
        self.tier.discard(key)
        return await self.store.delete(key)

    async def list(self, query: EntryQuery) -> EntryPage:
        return await self.store.list(query)

    async def resolve(self, prefix: str, limit: int = 2) -> builtins.list[str]:
        return await self.store.resolve(prefix, limit)

    async def totals(self) -> StoreTotals:
        return await self.store.totals()

    async def purge(self) -> int:
        self.tier.clear()
        return await self.store.purge()

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        await self.store.add_hits(hits)

    async def close(self) -> None:
        self.tier.clear()
        await self.store.close()
