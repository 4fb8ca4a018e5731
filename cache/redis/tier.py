"""The memory tier kept current by invalidation messages instead of a version round trip.

`TieredEntryStore` asks the shared index for an entry's version on every hit: one round
trip to Redis. `InvalidatedTier` asks once, marks the held copy current, and from then on
serves it without asking, until a message on `<prefix>entries` (published by the same
script that writes or deletes an entry, on any replica) says the key changed. Marks are
only trusted while the subscription is up: when it breaks or is made again (messages may
have been lost in between), every mark is dropped and hits ask again.

The price: between another replica's write and this replica hearing of it (the message's
trip, well under a millisecond on a LAN) a hit may still serve the version it held. A read
that raced a change (the message came while the version was being asked) marks nothing.
bench/README.md measures both ways ([redis] hit_check = "version" | "invalidation").
"""

from __future__ import annotations

from cache.memory import MemoryTier, TieredEntryStore
from cache.model import Entry, ImageFile
from cache.redis.entries import RedisEntryStore
from cache.redis.listener import Listener


class _Read:
    """One read in progress; `valid` turns False if the key changed meanwhile. Compared
    by identity: two reads of one key are two reads."""

    __slots__ = ("valid",)

    def __init__(self) -> None:
        self.valid = True


class InvalidatedTier(TieredEntryStore):
    def __init__(self, store: RedisEntryStore, tier: MemoryTier, listener: Listener) -> None:
        super().__init__(store, tier)
        self.listener = listener
        self._current: set[str] = set()  # keys whose held copy is known to be current
        self._reading: dict[str, set[_Read]] = {}  # reads in progress, per key
        listener.on(store.index.channel, self._invalidate)
        listener.on_reset(self._reset)

    def _invalidate(self, key: str) -> None:
        self._current.discard(key)
        for read in self._reading.get(key, ()):
            read.valid = False

    def _reset(self) -> None:
        self._current.clear()
        for reads in self._reading.values():
            for read in reads:
                read.valid = False

    async def version(self, key: str) -> str | None:
        """The shared index's version (always asked): a held copy it shows to be stale
        loses its mark at once, whether or not the message has come yet."""
        version = await self.store.version(key)
        held = self.tier.peek(key)
        if held is not None and held.version != version:
            self._current.discard(key)
        return version

    async def get(self, key: str) -> Entry | None:
        if key in self._current and self.listener.subscribed:
            held = self.tier.peek(key)
            if held is not None:
                return self.tier.get(key, held.version)  # (and marks it recently used)
            self._current.discard(key)
        await self.listener.start()
        read = _Read()
        self._reading.setdefault(key, set()).add(read)
        try:
            entry = await super().get(key)
        finally:
            reads = self._reading[key]
            reads.discard(read)
            if not reads:
                del self._reading[key]
        if entry is not None and read.valid and self.listener.subscribed:
            if len(self._current) > 2 * len(self.tier) + 1000:
                self._current.clear()  # keys the tier has since evicted
            self._current.add(key)
        return entry

    async def get_image(self, key: str) -> Entry | ImageFile | None:
        """Images in Redis (or S3) are never files to send: an image answer's lookup is a
        plain `get`, held copy and all (the base class would ask Redis for the version)."""
        return await self.get(key)

    async def delete(self, key: str) -> bool:
        self._current.discard(key)
        return await super().delete(key)

    async def purge(self) -> int:
        self._current.clear()
        return await super().purge()
