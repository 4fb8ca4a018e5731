"""The storage and coordination seams, as protocols every backend implements.

    EntryStore   generation results: metadata in an index, bytes in a BlobStore
    BlobStore    image bytes addressed by their SHA-256
    Coordinator  what several workers (and replicas) must agree on: the upstream rate
                 limit, single-flight leases, short-lived records (jobs, credentials),
                 counters
    RateLimiter  the part of a Coordinator that hands out upstream send slots

Every method is async; a backend whose calls block (diskcache, SQLite) moves them off the
event loop itself, so callers never think about threads. Backends raise `StoreError` or
`CoordinationError` (with `where`: the folder or URL, for messages an operator can act on)
rather than their library's own exceptions. One contract-test class per protocol lives in
tests/contract/; a new backend passes by adding a fixture.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cache.model import Artifact, Entry, EntryMeta, ImageFile, Source

Priority = Literal["interactive", "batch"]


class StoreError(Exception):
    """The store could not do what was asked: disk full, read-only or corrupt folder,
    server unreachable. `where` names the folder or URL."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


class CoordinationError(Exception):
    """The coordination backend could not be reached or written (see StoreError)."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(message)
        self.where = where


class QueueFull(Exception):
    """The next send slot is further away than a request may wait."""

    def __init__(self, wait: float, max_wait: float) -> None:
        super().__init__(f"the next send slot is {wait:.1f} s away (max {max_wait:g} s)")
        self.wait = wait
        self.max_wait = max_wait


@dataclass(frozen=True)
class EntryQuery:
    """A page of entries, newest first. Filters combine with AND; `prompt` is a
    case-insensitive substring of the positive prompts; `since`/`until` bound created_at."""

    limit: int = 50
    offset: int = 0
    engine: str | None = None
    route: str | None = None
    prompt: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True)
class EntryPage:
    total: int  # entries matching the filters, on every page
    entries: Sequence[EntryMeta]


@dataclass(frozen=True)
class StoreTotals:
    entries: int
    bytes: int  # image bytes of every entry
    disk_bytes: int  # what the backend uses, overhead included (0 when unknown)


@dataclass(frozen=True)
class LedgerRecord:
    """One line of the credits ledger: an upstream call (what it charged: None when unknown,
    a timeout after the request was sent) or a hit (the credits it saved)."""

    time: float
    kind: Literal["call", "hit"]
    route: str
    engine: str
    key: str
    status: int
    images: int
    credits: float | None
    caller: str = "anonymous"

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "kind": self.kind,
            "route": self.route,
            "engine": self.engine,
            "key": self.key,
            "status": self.status,
            "images": self.images,
            "credits": self.credits,
            "caller": self.caller,
        }


@dataclass(frozen=True)
class LedgerQuery:
    """Records newest first; `since`/`until` bound `time`; filters combine with AND."""

    limit: int = 100
    offset: int = 0
    since: float | None = None
    until: float | None = None
    route: str | None = None
    caller: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class LedgerPage:
    total: int
    records: Sequence[LedgerRecord]
    # day (UTC, YYYY-MM-DD) -> {"spent", "saved", "calls", "hits", "unknown"} over the query
    days: Mapping[str, Mapping[str, float]]


class BlobStore(Protocol):
    """Content-addressed bytes: `put` of a digest already present writes nothing, and
    nothing is ever overwritten. Deleting is the EntryStore's call, once no entry refers
    to the digest."""

    async def put(self, sha256: str, data: bytes) -> None: ...

    async def get(self, sha256: str) -> bytes | None: ...

    async def delete(self, sha256: str) -> None: ...

    async def close(self) -> None: ...


class EntryStore(Protocol):
    where: str

    def ready_for(self, nbytes: int) -> bool:
        """Whether a put of `nbytes` is expected to succeed now (room, writable, the last
        write did not fail): cheap, asked before answering a miss ahead of its store."""
        ...

    async def version(self, key: str) -> str | None:
        """The current version token of `key`, or None: the cheapest question, asked on
        every hit to check a memory-tier copy."""
        ...

    async def get(self, key: str) -> Entry | None:
        """The entry with its images, each checked against its SHA-256; an entry whose
        bytes are missing or damaged is removed and reads as None."""
        ...

    async def get_meta(self, key: str) -> EntryMeta | None: ...

    async def open_image(self, key: str) -> ImageFile | None:
        """The entry of one image as an open file of it, when that costs no read and no
        wait: its bytes are in a file of their own, already checked in this process. None
        otherwise (`get` then reads it). A store whose images are not files says None."""
        ...

    async def put(
        self,
        key: str,
        artifacts: Sequence[Artifact],
        summary: Mapping[str, Any],
        *,
        source: Source = "upstream",
        ttl: float | None = None,
    ) -> EntryMeta:
        """Store a new version: blobs first, then the index row (the commit point)."""
        ...

    async def delete(self, key: str) -> bool: ...

    async def list(self, query: EntryQuery) -> EntryPage: ...

    async def resolve(self, prefix: str, limit: int = 2) -> builtins.list[str]:
        """Keys starting with `prefix` (at most `limit`), from the index."""
        ...

    async def totals(self) -> StoreTotals:
        """Maintained totals: never a scan."""
        ...

    async def purge(self) -> int: ...

    async def add_hits(self, hits: Mapping[str, tuple[int, float]]) -> None:
        """Add per-entry hit counts (count, last hit time) gathered by a worker."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Ticket:
    """Who is asking for an upstream send slot: fair queueing serves interactive callers
    before batch ones, and callers of one priority in turn."""

    caller: str = "anonymous"
    priority: Priority = "interactive"
    # When the request reached the gateway (Unix time): orders one caller's requests first
    # come, first served, also across workers. None: when it asked for a slot.
    arrived: float | None = None


ANONYMOUS = Ticket()


@dataclass(frozen=True)
class Slot:
    """A send slot spent: the limiter logged a send at `stamp` (on its own clock: Unix time,
    or Redis's TIME; None for a limiter that keeps no log), and `granted` is this process's
    time.monotonic() at that moment (within a round trip, for Redis)."""

    waited: float
    granted: float
    stamp: float | None = None


class RateLimiter(Protocol):
    async def acquire(self, ticket: Ticket = ANONYMOUS) -> Slot:
        """Wait for a send slot and spend it. Raises QueueFull (and reserves nothing) when
        the slot is further away than the limiter allows."""
        ...

    async def restamp(self, slot: Slot, late: float) -> None:
        """The slot's request was written `late` seconds after the slot was granted (a new
        connection, a TLS handshake, a busy event loop): count its send from then, so the
        next window opens from when the request really left. Windows are counted at the
        upstream, and what the limiter logged must never be earlier than what it sees."""
        ...

    async def cool_down(self, seconds: float) -> None:
        """Hold every caller back for `seconds` (the account is being throttled)."""
        ...

    def queue_depth(self) -> int:
        """Requests of this process waiting for a slot now."""
        ...


class Coordinator(Protocol):
    where: str
    limiter: RateLimiter
    # True when nothing may reach the upstream while this backend is unreachable (Redis:
    # without it there is no shared limit or lease); False when going on without it is
    # safe (the cache folder: the limiter falls back to this worker's share).
    fails_closed: bool

    async def acquire_lease(self, name: str, token: str, ttl: float) -> bool: ...

    async def renew_lease(self, name: str, token: str, ttl: float) -> bool:
        """Extend a lease still held by `token`; False if it was lost."""
        ...

    async def release_lease(self, name: str, token: str) -> None:
        """Release only if `token` still holds it."""
        ...

    async def wait_released(self, name: str, timeout: float) -> None:
        """Return once nobody holds `name` (or after `timeout`)."""
        ...

    async def remember(self, kind: str, ident: str, value: Mapping[str, Any], ttl: float) -> None:
        """A small record that expires: a job, an accepted credential's hash."""
        ...

    async def recall(self, kind: str, ident: str) -> dict[str, Any] | None: ...

    async def add_counts(self, counts: Mapping[str, float]) -> None: ...

    async def counts(self) -> dict[str, float]: ...

    async def add_within(self, name: str, amount: float, cap: float, ttl: float) -> bool:
        """Add `amount` to the counter `name` only if it stays within `cap`, atomically
        across workers (a daily budget, a caller's requests per minute); the counter is
        forgotten `ttl` seconds after it was created. A negative amount always applies."""
        ...

    async def value(self, name: str) -> float:
        """The current value of an `add_within` counter (0 when unknown or expired)."""
        ...

    async def append_ledger(self, records: Sequence[LedgerRecord]) -> None: ...

    async def query_ledger(self, query: LedgerQuery) -> LedgerPage: ...

    async def close(self) -> None: ...
