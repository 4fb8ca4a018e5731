"""The few things the cache commands ask of the store, in one place.

Every cache command goes through these functions and nothing else, so that moving the
CLI onto another storage interface (an EntryStore, a remote backend) changes this module
only. They block: the CLI is synchronous.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cache.store import DiskStore

Store = DiskStore
Meta = dict[str, Any]

MIN_PREFIX = 8
KEY_LENGTH = 64
_HEX = re.compile(r"[0-9a-f]+")


class NoCache(LookupError):
    """The cache folder does not exist (or holds no cache): the commands create none."""


class BadKey(ValueError):
    """What was given cannot be a key or key prefix (too short, not hex)."""


class NoEntry(LookupError):
    """No entry matches, or more than one does (then `matches` says how many)."""

    def __init__(self, message: str, matches: int = 0) -> None:
        super().__init__(message)
        self.matches = matches


def open_store(directory: str | Path, size_limit: int) -> Store:
    """The store in `directory`, refusing to create one where there is none.

    `size_limit` is the configured one: diskcache keeps the last value it was opened with.
    """
    path = Path(directory)
    if not path.is_dir():
        raise NoCache(f"no cache folder at {path.resolve()}")
    if not (path / "entries").is_dir():
        raise NoCache(f"{path.resolve()} holds no gateway cache (no entries/ folder)")
    return DiskStore(path, size_limit=size_limit)


def list_page(store: Store, limit: int, offset: int) -> tuple[int, list[Meta]]:
    """(total, entries newest first)."""
    return store.list_meta(limit, offset)


def get_meta(store: Store, key: str) -> Meta | None:
    return store.get_meta(key)


def get_images(store: Store, key: str) -> list[tuple[bytes, str]] | None:
    """(bytes, media type) of each image of an entry, checked against its SHA-256."""
    entry = store.get(key)
    if entry is None:
        return None
    return [(a.data, a.media_type) for a in entry.artifacts]


def delete(store: Store, key: str) -> bool:
    return store.delete(key)


def purge(store: Store) -> int:
    return store.purge()


def stats(store: Store) -> dict[str, Any]:
    return store.stats()


def public(meta: Meta) -> Meta:
    """An entry's metadata as the inspection endpoints show it (no internal fields)."""
    from gateway.inspect_api import public_meta

    return public_meta(meta)


def _keys(store: Store) -> Iterator[str]:
    for meta in store.iter_meta():
        yield str(meta["key"])


def resolve(store: Store, prefix: str) -> str:
    """The one key that starts with `prefix` (8 to 64 hex digits, any case)."""
    given = prefix.strip().lower()
    if not _HEX.fullmatch(given) or len(given) > KEY_LENGTH:
        raise BadKey(f"{prefix!r} is not a key: keys are {KEY_LENGTH} hex digits")
    if len(given) < MIN_PREFIX:
        raise BadKey(f"{prefix!r} is too short: give at least {MIN_PREFIX} hex digits of a key")
    if len(given) == KEY_LENGTH:
        if store.get_meta(given) is None:
            raise NoEntry(f"no entry with key {given}")
        return given
    matches = [key for key in _keys(store) if key.startswith(given)]
    if not matches:
        raise NoEntry(f"no entry's key starts with {given}")
    if len(matches) > 1:
        raise NoEntry(
            f"{len(matches)} entries' keys start with {given}: give more digits",
            matches=len(matches),
        )
    return matches[0]
