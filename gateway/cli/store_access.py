"""The few things the cache commands ask of the store, in one place.

Every cache command goes through these functions and nothing else. They open the same
backends the gateway runs on (gateway.backends: the cache folder, or with a Redis URL the
store every replica shares, whose counters they all add to) and drive their async interface from one
event loop held for the life of the command: the CLI itself stays synchronous, and
imports nothing of the web stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from cache.interfaces import EntryQuery
from gateway.backends import Backends, open_backends
from gateway.config import Settings
from gateway.stats import KeyNotFound, cache_stats, find_key, variants_of

T = TypeVar("T")
Meta = dict[str, Any]

MIN_PREFIX = 8
KEY_LENGTH = 64


class NoCache(LookupError):
    """The cache folder does not exist (or holds no cache): the commands create none."""


class NoRedis(LookupError):
    """The shared Redis cannot be reached (the commands change nothing then)."""


class BadKey(ValueError):
    """What was given cannot be a key or key prefix (too short, not hex)."""


class NoEntry(LookupError):
    """No entry matches, or more than one does (then `matches` says how many)."""

    def __init__(self, message: str, matches: int = 0) -> None:
        super().__init__(message)
        self.matches = matches


class Store:
    """The backends of one cache, and the event loop the commands drive them with."""

    def __init__(self, settings: Settings) -> None:
        self.runner = asyncio.Runner()
        self.backends: Backends = open_backends(settings)
        policy = settings.cache.random_seed_policy
        self.variants = settings.cache.variants if policy == "variants" else 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(work)

    def close(self) -> None:
        self.run(self.backends.aclose())
        self.runner.close()


def where(settings: Settings) -> str:
    """What the commands work on, as they print it: the folder, or Redis and its prefix."""
    if settings.redis.url:
        from cache.redis import redact

        return f"{redact(settings.redis.url)} (prefix {settings.redis.prefix})"
    return str(Path(settings.cache.dir).resolve())


def open_store(settings: Settings) -> Store:
    """The store of `settings`' cache folder, refusing to create one where there is none;
    with a Redis URL, the replicas' shared store, if Redis answers."""
    if settings.redis.url:
        store = Store(settings)
        if not store.run(store.backends.healthy()):
            store.close()
            raise NoRedis(f"cannot reach Redis at {where(settings)}")
        return store
    path = Path(settings.cache.dir)
    if not path.is_dir():
        raise NoCache(f"no cache folder at {path.resolve()}")
    legacy = (path / "entries" / "cache.db").is_file()  # the first layout: brought over
    if not (path / "index.sqlite3").is_file() and not legacy:
        raise NoCache(f"{path.resolve()} holds no gateway cache (no index.sqlite3)")
    return Store(settings)


def list_page(store: Store, limit: int, offset: int) -> tuple[int, list[Meta]]:
    """(total, entries newest first), each as the inspection endpoints show it."""
    page = store.run(store.backends.entries.list(EntryQuery(limit=limit, offset=offset)))
    return page.total, [m.public() for m in page.entries]


def get_meta(store: Store, key: str) -> Meta | None:
    """An entry as the inspection endpoints show it, with its random-seed variants."""
    entries = store.backends.entries
    meta = store.run(entries.get_meta(key))
    count = store.variants
    base = str(meta.summary.get("variant_of") or key) if meta is not None else key
    variants = store.run(variants_of(entries, base, count)) if count else []
    if meta is None and not variants:
        return None
    shown: dict[str, Any] = meta.public() if meta is not None else {"key": key}
    if variants:
        shown["variants"] = variants
    return shown


def get_images(store: Store, key: str) -> list[tuple[bytes, str]] | None:
    """(bytes, media type) of each image of an entry, checked against its SHA-256."""
    entry = store.run(store.backends.entries.get(key))
    if entry is None:
        return None
    return [(a.data, a.media_type) for a in entry.artifacts]


def delete(store: Store, key: str) -> bool:
    return store.run(store.backends.entries.delete(key))


def purge(store: Store) -> int:
    return store.run(store.backends.entries.purge())


def stats(store: Store) -> dict[str, Any]:
    async def gather() -> dict[str, Any]:
        counts = await store.backends.coordinator.counts()
        return await cache_stats(store.backends.entries, counts)

    return store.run(gather())


def public(meta: Meta) -> Meta:
    """Metadata is already in its public form (see `get_meta`)."""
    return meta


def resolve(store: Store, prefix: str) -> str:
    """The one key that starts with `prefix` (8 to 64 hex digits, any case)."""
    given = prefix.strip().lower()
    if not all(c in "0123456789abcdef" for c in given) or not given or len(given) > KEY_LENGTH:
        raise BadKey(f"{prefix!r} is not a key: keys are {KEY_LENGTH} hex digits")
    if len(given) < MIN_PREFIX:
        raise BadKey(f"{prefix!r} is too short: give at least {MIN_PREFIX} hex digits of a key")
    if len(given) == KEY_LENGTH:
        if get_meta(store, given) is None:
            raise NoEntry(f"no entry with key {given}")
        return given
    matches = store.run(store.backends.entries.resolve(given, limit=1000))
    if not matches:
        raise NoEntry(f"no entry's key starts with {given}")
    if len(matches) > 1:
        raise NoEntry(
            f"{len(matches)} entries' keys start with {given}: give more digits",
            matches=len(matches),
        )
    try:
        return store.run(find_key(store.backends.entries, given))
    except KeyNotFound as exc:  # pragma: no cover - resolved above
        raise NoEntry(str(exc)) from None
