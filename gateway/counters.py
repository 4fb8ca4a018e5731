"""Event counters and the credits ledger: counted in memory, saved every second.

A hit must cost no write, so every worker counts its events here and `flush` adds them to
the coordinator's counters (and the per-entry hit counts to the entry store, and the
ledger records to the coordinator's ledger) in one go. A flush that fails (a full disk,
Redis away) keeps everything and tries again next time: nothing counted is lost while the
gateway runs.

Credits are counted twice over, for two readers: as counters (`credits_spent`,
`credits_saved`, and per UTC day `credits_spent:YYYY-MM-DD`...: the totals for stats,
never a scan) and as ledger records (what each upstream call charged, what hits saved: the
detail). Hits are recorded per entry and flush (one record per entry per second with the
number of images served), so a busy hit path adds a handful of rows a second, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from cache.interfaces import (
    CoordinationError,
    Coordinator,
    EntryStore,
    LedgerRecord,
    StoreError,
)
from gateway.credits import today

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
    "credits_spent",
    "credits_saved",
)
FLUSH_SECONDS = 1.0
FAILURE_LOG_SECONDS = 60.0


@dataclass
class _Saved:
    route: str
    engine: str
    caller: str
    images: int
    credits: float
    last: float


class Counters:
    def __init__(self, coordinator: Coordinator, entries: EntryStore) -> None:
        self.coordinator = coordinator
        self.entries = entries
        self._pending: defaultdict[str, float] = defaultdict(float)  # credits are fractional
        self._hits: dict[str, tuple[int, float]] = {}
        self._records: list[LedgerRecord] = []
        self._saved: dict[tuple[str, str], _Saved] = {}
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

    def charged(self, record: LedgerRecord) -> None:
        """An upstream call, as the ledger records it."""
        self._records.append(record)
        if record.credits:
            self._credit("credits_spent", record.credits, record.caller, record.time)

    def saved(
        self, key: str, route: str, engine: str, caller: str, images: int, credits: float
    ) -> None:
        """A hit that served `images` images worth `credits`."""
        now = time.time()
        held = self._saved.get((key, caller))
        if held is None:
            self._saved[(key, caller)] = _Saved(route, engine, caller, images, credits, now)
        else:
            held.images += images
            held.credits += credits
            held.last = now
        if credits:
            self._credit("credits_saved", credits, caller, now)

    def _credit(self, name: str, credits: float, caller: str, when: float) -> None:
        day = today(when)
        for counter in (name, f"{name}:{day}", f"{name}@{caller}", f"{name}@{caller}:{day}"):
            self._pending[counter] += credits

    async def flush(self) -> None:
        async with self._lock:
            pending, self._pending = self._pending, defaultdict(float)
            hits, self._hits = self._hits, {}
            records, self._records = self._records, []
            saved, self._saved = self._saved, {}
            records += [
                LedgerRecord(s.last, "hit", s.route, s.engine, key, 200, s.images, s.credits,
                             s.caller)
                for (key, _caller), s in saved.items()
            ]  # fmt: skip
            try:
                await self.coordinator.add_counts(pending)
                pending = defaultdict(float)
                await self.coordinator.append_ledger(records)
                records = []
                await self.entries.add_hits(hits)
            except (CoordinationError, StoreError) as exc:
                for name, amount in pending.items():
                    self._pending[name] += amount
                self._records[:0] = records
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
