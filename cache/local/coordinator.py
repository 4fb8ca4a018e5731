"""LocalCoordinator: what the worker processes of one host agree on, in the cache folder.

Everything lives in one diskcache (`<dir>/state`, eviction disabled, so nothing here is
ever culled): the rate-limit queue, single-flight leases, short-lived records and counters;
the credits ledger is a SQLite table beside it (`ledger.sqlite3`).
diskcache's `add` and `transact` are atomic across processes on a local disk (not NFS).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import diskcache

from cache.interfaces import LedgerPage, LedgerQuery, LedgerRecord, RateLimiter
from cache.local.errors import coordination_errors
from cache.local.ledger import Ledger
from cache.local.ratelimit import DiskRateLimiter, FallbackLimiter, MemoryRateLimiter

LEASE_POLL_SECONDS = 0.05
COUNTS_KEY = ("counts",)
# Values up to this size stay inside SQLite rather than in files of their own: the
# rate-limit queue with hundreds of waiting tickets is a few tens of KiB.
STATE_MIN_FILE_SIZE = 1024 * 1024


class LocalCoordinator:
    fails_closed = False  # a full disk: calls go on, paced at this worker's share

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        limit: int,
        period: float,
        margin: float = 0.0,
        max_wait: float = 60.0,
        backend: str = "disk",
        workers: int = 1,
    ) -> None:
        self.where = str(Path(directory))
        with coordination_errors(self.where):
            Path(directory).mkdir(parents=True, exist_ok=True)
            self.state = diskcache.Cache(
                self.where, eviction_policy="none", disk_min_file_size=STATE_MIN_FILE_SIZE
            )
            self.ledger = Ledger(Path(directory) / "ledger.sqlite3")
        self.limiter: RateLimiter
        if backend == "memory":
            self.limiter = MemoryRateLimiter(
                limit=limit, period=period, margin=margin, max_wait=max_wait
            )
        else:
            share = max(1, limit // max(1, workers))
            self.limiter = FallbackLimiter(
                DiskRateLimiter(
                    self.state,
                    limit=limit,
                    period=period,
                    margin=margin,
                    max_wait=max_wait,
                    where=self.where,
                ),
                MemoryRateLimiter(limit=share, period=period, margin=margin, max_wait=max_wait),
                self.where,
            )

    async def _run(self, fn: Any, *args: Any) -> Any:
        def call() -> Any:
            with coordination_errors(self.where):
                return fn(*args)

        return await anyio.to_thread.run_sync(call)

    # -- leases ---------------------------------------------------------------------------

    def _acquire(self, name: str, token: str, ttl: float) -> bool:
        return bool(self.state.add(("lease", name), token, expire=ttl))

    def _renew(self, name: str, token: str, ttl: float) -> bool:
        with self.state.transact():
            if self.state.get(("lease", name)) != token:
                return False
            self.state.set(("lease", name), token, expire=ttl)
            return True

    def _release(self, name: str, token: str) -> None:
        with self.state.transact():
            if self.state.get(("lease", name)) == token:
                self.state.delete(("lease", name))

    def holder(self, name: str) -> str | None:
        value = self.state.get(("lease", name))
        return None if value is None else str(value)

    async def acquire_lease(self, name: str, token: str, ttl: float) -> bool:
        return bool(await self._run(self._acquire, name, token, ttl))

    async def renew_lease(self, name: str, token: str, ttl: float) -> bool:
        return bool(await self._run(self._renew, name, token, ttl))

    async def release_lease(self, name: str, token: str) -> None:
        await self._run(self._release, name, token)

    async def wait_released(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while await self._run(self.holder, name) is not None:
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(LEASE_POLL_SECONDS)

    # -- records and counters -------------------------------------------------------------

    async def remember(self, kind: str, ident: str, value: Mapping[str, Any], ttl: float) -> None:
        await self._run(self.state.set, ("record", kind, ident), dict(value), ttl)

    async def recall(self, kind: str, ident: str) -> dict[str, Any] | None:
        value = await self._run(self.state.get, ("record", kind, ident))
        return value if isinstance(value, dict) else None

    def _add_counts(self, counts: Mapping[str, float]) -> None:
        # All counters in one value: reading them is one row, never a scan.
        with self.state.transact():
            totals: dict[str, float] = dict(self.state.get(COUNTS_KEY, {}))
            for name, amount in counts.items():
                totals[name] = totals.get(name, 0) + amount
            self.state.set(COUNTS_KEY, totals)

    def _counts(self) -> dict[str, float]:
        return {str(k): v for k, v in dict(self.state.get(COUNTS_KEY, {})).items()}

    async def add_counts(self, counts: Mapping[str, float]) -> None:
        if counts:
            await self._run(self._add_counts, dict(counts))

    async def counts(self) -> dict[str, float]:
        return dict(await self._run(self._counts))

    def _add_within(self, name: str, amount: float, cap: float, ttl: float) -> bool:
        key = ("within", name)
        with self.state.transact():
            now = time.time()
            held = self.state.get(key)
            value, expires = (0.0, now + ttl) if held is None else held
            if amount > 0 and value + amount > cap:
                return False
            # Keep the counter's own expiry: a budget is for one day, not a day since the
            # last request.
            self.state.set(key, (value + amount, expires), expire=max(expires - now, 0.001))
            return True

    def _value(self, name: str) -> float:
        held = self.state.get(("within", name))
        return 0.0 if held is None else float(held[0])

    async def add_within(self, name: str, amount: float, cap: float, ttl: float) -> bool:
        return bool(await self._run(self._add_within, name, amount, cap, ttl))

    async def value(self, name: str) -> float:
        return float(await self._run(self._value, name))

    async def append_ledger(self, records: Sequence[LedgerRecord]) -> None:
        if records:
            await self._run(self.ledger.append, list(records))

    async def query_ledger(self, query: LedgerQuery) -> LedgerPage:
        page: LedgerPage = await self._run(self.ledger.query, query)
        return page

    async def close(self) -> None:
        self.ledger.close()
        self.state.close()
