"""What the cache holds and what it saved: one summary for the inspection API and the CLI."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from cache.interfaces import EntryStore
from gateway.counters import EVENTS
from gateway.credits import today


def summarise(totals_entries: int, image_bytes: int, disk_bytes: int,
              counts: Mapping[str, float]) -> dict[str, Any]:  # fmt: skip
    """Entries, bytes and counters, and the hit ratio: the share of requests answered
    without an upstream call of their own (hits and coalesced requests, over those plus
    misses)."""
    out: dict[str, Any] = {
        "entries": totals_entries,
        "bytes": image_bytes,
        "disk_bytes": disk_bytes,
    }
    # Counters named `name:day` or `name@caller` are the breakdowns below, not totals.
    plain = {name for name in counts if ":" not in name and "@" not in name}
    for name in sorted({*EVENTS, *plain}):
        out[name] = _number(counts.get(name, 0))
    day = today()
    for kind in ("spent", "saved"):
        out[f"credits_{kind}_today"] = _number(counts.get(f"credits_{kind}:{day}", 0))
    callers: dict[str, dict[str, Any]] = {}
    for name, value in counts.items():
        kind, at, rest = name.partition("@")
        if not at or kind not in ("credits_spent", "credits_saved"):
            continue
        caller, _, when = rest.partition(":")
        if when in ("", day):
            field = kind.removeprefix("credits_") + ("_today" if when else "")
            callers.setdefault(caller, {})[field] = _number(value)
    out["callers"] = callers
    saved = out["hits"] + out["coalesced"]
    asked = saved + out["misses"]
    out["hit_ratio"] = round(saved / asked, 4) if asked else 0.0
    return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else round(float(value), 4)


async def cache_stats(entries: EntryStore, counts: Mapping[str, float]) -> dict[str, Any]:
    totals = await entries.totals()
    return summarise(totals.entries, totals.bytes, totals.disk_bytes, counts)


MIN_PREFIX = 8
_HEX = re.compile(r"[0-9a-f]+")


class KeyNotFound(LookupError):
    """No entry, or no single entry, answers to the key or prefix given."""


async def find_key(entries: EntryStore, given: str) -> str:
    """A full key, or the one key a prefix of 8+ hex characters names (as `cache ls`
    prints them); KeyNotFound saying whether none or several matched."""
    given = given.strip().lower()
    if not _HEX.fullmatch(given):
        raise KeyNotFound(f"{given[:70]!r} is not a cache key (64 hex characters, or a prefix)")
    if len(given) == 64:
        return given
    if len(given) < MIN_PREFIX:
        raise KeyNotFound(f"a key prefix needs at least {MIN_PREFIX} hex characters: {given!r}")
    matches = await entries.resolve(given, limit=2)
    if not matches:
        raise KeyNotFound(f"no cache entry has a key starting {given!r}")
    if len(matches) > 1:
        raise KeyNotFound(f"more than one entry has a key starting {given!r}: give more of it")
    return str(matches[0])
