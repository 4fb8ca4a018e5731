"""Event counters: counted in memory, added to the shared totals every second.

A hit must cost no write, so every worker counts its events here and `flush` adds them to
the coordinator's counters (and the per-entry hit counts to the entry store) in one go. A
flush that fails (a full disk, Redis away) keeps the counts and tries again next time:
nothing counted is lost while the gateway runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from cache.interfaces import CoordinationError, Coordinator, EntryStore, StoreError

log = logging.getLogger("gateway.counters")

# The names every backend's counters use (the inspection API shows them all, 0 if unseen).
EVENTS = (
    "hits",
    "misses",
    "coalesced",
    "upstream_calls",
    "stale_served",
    "bytes_served_from_cache",
    "store_failures",
)
FLUSH_SECONDS = 1.0
FAILURE_LOG_SECONDS = 60.0


class Counters:
    def __init__(self, coordinator: Coordinator, entries: EntryStore) -> None:
        self.coordinator = coordinator
        self.entries = entries
        self._pending: defaultdict[str, float] = defaultdict(float)  # credits are fractional
        self._hits: dict[str, tuple[int, float]] = {}
        self._lock = asyncio.Lock()
        self._logged_at = 0.0

    def count(self, name: str, amount: float = 1) -> None:
        self._pending[name] += amount

    def hit(self, key: str, nbytes: int) -> None:
        self._pending["hits"] += 1
        self._pending["bytes_served_from_cache"] += nbytes
        count, _ = self._hits.get(key, (0, 0.0))
        self._hits[key] = (count + 1, time.time())

    def pending_hits(self, key: str) -> int:
        return self._hits.get(key, (0, 0.0))[0]

    async def flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, defaultdict(float)
            hits, self._hits = self._hits, {}
            try:
                await self.coordinator.add_counts(pending)
                pending = defaultdict(float)
                await self.entries.add_hits(hits)
            except (CoordinationError, StoreError) as exc:
                for name, amount in pending.items():
                    self._pending[name] += amount
                for key, (count, last) in hits.items():
                    old, old_last = self._hits.get(key, (0, 0.0))
                    self._hits[key] = (old + count, max(last, old_last))
                now = time.monotonic()
                if now - self._logged_at >= FAILURE_LOG_SECONDS:
                    self._logged_at = now
                    log.error(
                        "%s: counters could not be saved (%s); kept in memory, retried every "
                        "%g s", exc.where, exc, FLUSH_SECONDS,
                    )  # fmt: skip

    async def totals(self) -> dict[str, float]:
        """The shared totals, this worker's pending counts included."""
        await self.flush()
        counts = await self.coordinator.counts()
        return {name: counts.get(name, 0) for name in sorted({*EVENTS, *counts})}

    async def run(self) -> None:
        """Flush every second until cancelled; a failed flush never stops the loop."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # anything unexpected: log it, keep counting
                log.exception("flushing counters failed; retrying")
