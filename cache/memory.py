"""A bounded in-memory tier of hot entries, in front of the disk store.

uvicorn has no sendfile, so every hit served from disk costs a file read through a worker
thread; hot images are better answered from memory. The tier is an LRU bounded by bytes
(the image bytes plus one JSON rendering with the image in base64, which is built on the
first JSON hit and kept: see `Artifact.rendered`).

Each worker process has its own tier, and another process may delete or replace an entry
on disk. So a memory hit is trusted only while the disk still holds metadata with the
same `created_at` (one small SQLite read, no thread hop): a refreshed, deleted or purged
entry is never served from a stale memory copy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cache.store import Entry


def footprint(entry: Entry) -> int:
    """Bytes an entry may come to hold: the images plus one base64 rendering of each."""
    return sum(len(a.data) + (len(a.data) + 2) // 3 * 4 for a in entry.artifacts)


class MemoryTier:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._entries: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, created_at: float | None) -> Entry | None:
        """The entry, if held and still the one on disk (same `created_at`)."""
        with self._lock:
            held = self._entries.get(key)
            if held is None:
                return None
            entry, _ = held
            if created_at is None or entry.meta.get("created_at") != created_at:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry

    def put(self, entry: Entry) -> None:
        size = footprint(entry)
        if size > self.max_bytes:
            return  # larger than the whole tier: serve it from disk
        with self._lock:
            self._drop(entry.key)
            self._entries[entry.key] = (entry, size)
            self.used += size
            while self.used > self.max_bytes:
                oldest = next(iter(self._entries))
                self._drop(oldest)

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
