"""The disk store: entries (metadata + image bytes), hit counters and global stats.

Layout inside the cache folder (two diskcache caches, so that counters are never evicted):

    entries/   ("meta", key) -> metadata dict       (small: SQLite row)
               ("blob", key, version, i) -> image bytes  (>= 32 KiB: a file of its own)
               ("hits", key) -> (count, last_hit_at)
    state/     counters, rate-limiter and lock records; eviction_policy "none"

Blobs are written before their metadata and read after it, so metadata is the commit
marker. Each put writes its blobs under a fresh version named in the metadata, and removes
the previous version's only after the new metadata is in place: a reader in another
process never mixes two versions. An entry whose blob is missing (evicted, deleted by
hand) or whose bytes no longer match the SHA-256 in the metadata is a miss and is removed.
Counters for hits are kept in memory and flushed in batches, so a hit costs no SQLite write.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache

from cache.memory import MemoryTier

STAT_NAMES = ("hits", "misses", "upstream_calls", "stale_served", "bytes_served_from_cache")


@dataclass(frozen=True)
class Artifact:
    """One generated image as stored: its bytes and what Stability said about it."""

    data: bytes
    seed: int
    finish_reason: str = "SUCCESS"
    media_type: str = "image/png"

    _memo: dict[str, bytes] = field(default_factory=dict, compare=False, repr=False)

    def rendered(self, form: str, build: Callable[[Artifact], bytes]) -> bytes:
        """`build(self)`, computed once per Artifact object and form name.

        An entry held in the memory tier keeps its Artifact objects, so an answer that has
        to be derived from the image (base64 inside JSON, say) is built on the first hit
        and reused by the next ones. The store itself never looks inside these forms.
        """
        body = self._memo.get(form)
        if body is None:
            body = self._memo[form] = build(self)
        return body

    def remember(self, form: str, body: bytes) -> None:
        """Store a form already at hand (the upstream's own JSON, say), so that
        `rendered` need not build it."""
        self._memo[form] = body


@dataclass
class Entry:
    key: str
    artifacts: list[Artifact]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(len(a.data) for a in self.artifacts)


def _blob(key: str, meta: dict[str, Any], index: int) -> tuple[str, str, str, int]:
    """Where one image of one version of an entry lives."""
    return ("blob", key, str(meta.get("version", "")), index)


class DiskStore:
    """diskcache-backed storage of generation results. Every method blocks: call from a thread."""

    def __init__(
        self,
        directory: str | Path,
        *,
        size_limit: int = 10 * 1024**3,
        eviction_policy: str = "least-recently-stored",
        memory_bytes: int = 0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.entries = diskcache.Cache(
            str(self.directory / "entries"),
            size_limit=size_limit,
            eviction_policy=eviction_policy,
        )
        self.state = diskcache.Cache(str(self.directory / "state"), eviction_policy="none")
        self.memory = MemoryTier(memory_bytes)
        self._pending: Counter[str] = Counter()
        self._pending_hits: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    # -- entries -------------------------------------------------------------------------

    def held(self, key: str) -> tuple[Entry | None, bool]:
        """(entry from the memory tier if held and still current, whether the disk has it).

        Costs one small SQLite read and no file read, so it may run on the event loop.
        (None, True) means: read it from disk with `get`, in a thread; (None, False) is a
        miss with no further I/O.
        """
        meta = self.entries.get(("meta", key))
        if meta is None:
            self.memory.discard(key)
            return None, False
        return self.memory.get(key, meta["created_at"]), True

    def get(self, key: str) -> Entry | None:
        """Read an entry from disk, checking every image against its SHA-256.

        A mismatch has two causes: another process replaced the entry while we read it
        (the metadata has changed since: read again), or the bytes on disk are damaged (it
        has not: the entry is removed, and the request becomes a miss).
        """
        for _ in range(3):
            meta = self.entries.get(("meta", key))
            if meta is None:
                self.memory.discard(key)
                return None
            artifacts = self._read_artifacts(key, meta)
            if artifacts is not None:
                entry = Entry(key, artifacts, meta)
                self.memory.put(entry)
                return entry
            with self.entries.transact():
                current = self.entries.get(("meta", key))
                if current is not None and current.get("version") == meta.get("version"):
                    self.delete(key)  # the same version, damaged or evicted: gone
                    return None
        return None  # replaced three times while we read: let this request miss

    def _read_artifacts(self, key: str, meta: dict[str, Any]) -> list[Artifact] | None:
        artifacts = []
        for i, info in enumerate(meta["artifacts"]):
            data = self.entries.get(_blob(key, meta, i))
            if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != info["sha256"]:
                return None
            artifacts.append(
                Artifact(data, int(info["seed"]), info["finish_reason"], info["media_type"])
            )
        return artifacts

    def get_meta(self, key: str) -> dict[str, Any] | None:
        meta = self.entries.get(("meta", key))
        if meta is None:
            return None
        return self._with_hits(meta)

    def put(self, entry: Entry) -> dict[str, Any]:
        """Store bytes then metadata; returns the metadata as stored."""
        now = time.time()
        meta = dict(entry.meta)
        meta.update(
            key=entry.key,
            created_at=now,
            bytes=entry.nbytes,
            artifacts=[
                {
                    "seed": a.seed,
                    "finish_reason": a.finish_reason,
                    "media_type": a.media_type,
                    "bytes": len(a.data),
                    "sha256": hashlib.sha256(a.data).hexdigest(),
                }
                for a in entry.artifacts
            ],
        )
        meta["version"] = uuid.uuid4().hex
        for i, artifact in enumerate(entry.artifacts):
            self.entries.set(_blob(entry.key, meta, i), artifact.data)
        with self.entries.transact():
            old = self.entries.get(("meta", entry.key))
            self.entries.set(("meta", entry.key), meta)
            self.entries.delete(("hits", entry.key))
        if old is not None:
            self._delete_blobs(entry.key, old)
        self.memory.put(Entry(entry.key, entry.artifacts, meta))
        return meta

    def delete(self, key: str) -> bool:
        self.memory.discard(key)
        meta = self.entries.pop(("meta", key), None)
        if meta is not None:
            self._delete_blobs(key, meta)
        self.entries.delete(("hits", key))
        with self._lock:
            self._pending_hits.pop(key, None)
        return meta is not None

    def _delete_blobs(self, key: str, meta: dict[str, Any]) -> None:
        for i in range(len(meta["artifacts"])):
            self.entries.delete(_blob(key, meta, i))

    def iter_meta(self) -> Iterator[dict[str, Any]]:
        for k in list(self.entries.iterkeys()):
            if isinstance(k, tuple) and k[0] == "meta":
                meta = self.entries.get(k)
                if meta is not None:
                    yield self._with_hits(meta)

    def list_meta(self, limit: int = 50, offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """(total, page) newest first. Scans every entry: fine for the thousands of images a
        team keeps; an index would be the next step beyond that."""
        self.flush()
        metas = sorted(self.iter_meta(), key=lambda m: m["created_at"], reverse=True)
        return len(metas), metas[offset : offset + limit]

    def purge(self) -> int:
        count = sum(1 for k in self.entries.iterkeys() if isinstance(k, tuple) and k[0] == "meta")
        self.entries.clear()
        self.memory.clear()
        with self._lock:
            self._pending_hits.clear()
        return count

    def _with_hits(self, meta: dict[str, Any]) -> dict[str, Any]:
        hits, last = self.entries.get(("hits", meta["key"]), (0, None))
        with self._lock:
            extra, extra_last = self._pending_hits.get(meta["key"], (0, None))
        return {**meta, "hits": hits + extra, "last_hit_at": extra_last or last}

    # -- counters ------------------------------------------------------------------------

    def count(self, name: str, amount: int = 1) -> None:
        """Count an event in memory; flush() adds it to the shared totals."""
        with self._lock:
            self._pending[name] += amount

    def count_hit(self, key: str, nbytes: int) -> None:
        now = time.time()
        with self._lock:
            self._pending["hits"] += 1
            self._pending["bytes_served_from_cache"] += nbytes
            hits, _ = self._pending_hits.get(key, (0, now))
            self._pending_hits[key] = (hits + 1, now)

    def flush(self) -> None:
        """Add this process's pending counts to the shared totals (one transaction)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            hits, self._pending_hits = self._pending_hits, {}
        if not pending and not hits:
            return
        with self.state.transact():
            for name, amount in pending.items():
                self.state.incr(("stat", name), amount, default=0)
        for key, (count, last) in hits.items():
            with self.entries.transact():
                if ("meta", key) not in self.entries:
                    continue
                old, _ = self.entries.get(("hits", key), (0, None))
                self.entries.set(("hits", key), (old + count, last))

    def stats(self) -> dict[str, Any]:
        self.flush()
        totals = {name: int(self.state.get(("stat", name), 0)) for name in STAT_NAMES}
        entries = 0
        image_bytes = 0
        for meta in self.iter_meta():
            entries += 1
            image_bytes += int(meta.get("bytes", 0))
        lookups = totals["hits"] + totals["misses"]
        return {
            "entries": entries,
            "bytes": image_bytes,
            "disk_bytes": int(self.entries.volume()),
            **totals,
            "hit_ratio": round(totals["hits"] / lookups, 4) if lookups else 0.0,
        }

    def close(self) -> None:
        self.flush()
        self.entries.close()
        self.state.close()
