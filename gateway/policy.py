"""The cache decision, as a pure function of the request's controls and the entry found.

Kept free of I/O so every combination can be tested directly; the pipeline logs the
decision's reason and carries it out.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from starlette.datastructures import Headers

from cache.model import EntryMeta
from gateway.errors import BadRequest

NAMESPACE = re.compile(r"[a-z0-9_-]{1,64}")


class Action(enum.Enum):
    SERVE = "serve"  # answer from the entry found
    FETCH = "fetch"  # ask the upstream (then store, unless no-store)
    PLACEHOLDER = "placeholder"  # offline: draw one
    MISS = "miss"  # 504: not cached and not allowed to ask


@dataclass(frozen=True)
class Controls:
    no_cache: bool = False  # ask the upstream even on a hit, then store
    no_store: bool = False  # neither read nor write the cache
    only_if_cached: bool = False  # never the upstream: 504 on a miss
    allow_cached: bool = False  # a failed upstream call may be answered with the entry
    max_age: float | None = None  # serve an entry only if it is younger than this (s)
    ttl: float | None = None  # store the entry with this lifetime (s)
    namespace: str | None = None  # a cache of its own: part of the key

    @classmethod
    def from_headers(
        cls, headers: Headers, *, allow_cached_default: bool, max_ttl: float = math.inf
    ) -> Controls:
        """The request's cache controls; BadRequest for a malformed one (a control the
        caller meant to send must not be quietly ignored)."""
        directives: dict[str, str] = {}
        for part in headers.get("cache-control", "").split(","):
            name, _, value = part.strip().partition("=")
            if name:
                directives[name.lower()] = value.strip().strip('"')
        allow = headers.get("x-allow-cached")
        return cls(
            no_cache="no-cache" in directives,
            no_store="no-store" in directives,
            only_if_cached="only-if-cached" in directives,
            allow_cached=(
                allow.strip().lower() in ("1", "true", "yes")
                if allow is not None
                else allow_cached_default
            ),
            max_age=(
                _seconds("Cache-Control max-age", directives["max-age"], math.inf)
                if "max-age" in directives
                else None
            ),
            ttl=_ttl(headers.get("x-cache-ttl"), max_ttl),
            namespace=_namespace(headers.get("x-cache-namespace")),
        )


def _seconds(what: str, raw: str, maximum: float) -> float:
    if not raw.strip().isdigit() or len(raw.strip()) > 12:
        raise BadRequest(f"{what}: expected whole seconds, got {raw[:40]!r}", name="bad_request")
    value = float(raw.strip())
    if value > maximum:
        raise BadRequest(f"{what}: at most {maximum:g} seconds, got {value:g}", name="bad_request")
    return value


def _ttl(raw: str | None, maximum: float) -> float | None:
    if raw is None:
        return None
    value = _seconds("X-Cache-TTL", raw, maximum)
    if value < 1:
        raise BadRequest("X-Cache-TTL: at least 1 second", name="bad_request")
    return value


def _namespace(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not NAMESPACE.fullmatch(raw):
        raise BadRequest(
            f"X-Cache-Namespace: 1-64 of a-z, 0-9, _ and -; got {raw[:70]!r}", name="bad_request"
        )
    return raw


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    stale: bool = False  # the entry may still serve as a fallback if the upstream fails
    store: bool = True
    fresh: bool = False  # only a new upstream answer will do: never another request's result


def decide(
    *,
    mode: str,
    controls: Controls,
    meta: EntryMeta | None,
    now: float,
    ttl: float,
    refresh_random: bool,
    random_seed: bool,
) -> Decision:
    """What to do with one request. `meta` is the entry's metadata, or None on a miss."""
    if controls.no_store:
        if mode == "offline":
            return Decision(Action.PLACEHOLDER, "no-store, offline", store=False)
        if mode == "replay" or controls.only_if_cached:
            return Decision(Action.MISS, "no-store: the cache may not be read", store=False)
        return Decision(Action.FETCH, "no-store", store=False)

    if mode in ("offline", "replay"):
        if meta is not None and not (mode == "offline" and controls.no_cache):
            return Decision(Action.SERVE, f"{mode}: hit")
        if mode == "offline":
            return Decision(Action.PLACEHOLDER, "offline: miss")
        return Decision(Action.MISS, "replay: not cached")

    real = meta is not None and meta.source != "offline"
    too_old = (
        controls.max_age is not None
        and meta is not None
        and (now - meta.created_at > controls.max_age)
    )
    expired = (
        meta is not None
        and real
        and ((ttl > 0 and now - meta.created_at > ttl) or meta.expired(now))
    )
    if controls.only_if_cached:
        if real:
            return Decision(Action.SERVE, "only-if-cached: hit")
        return Decision(Action.MISS, "only-if-cached: not cached")
    if not real:
        # no-cache (or a random seed under "refresh") wants its own image even on a miss:
        # not the result of an identical request that was answered a moment ago.
        fresh = controls.no_cache or (refresh_random and random_seed)
        return Decision(Action.FETCH, "miss", fresh=fresh)
    if controls.no_cache:
        return Decision(Action.FETCH, "no-cache: refresh", stale=True, fresh=True)
    if expired:
        return Decision(Action.FETCH, "expired", stale=True)
    if too_old:
        return Decision(Action.FETCH, "older than the request's max-age", stale=True)
    if refresh_random and random_seed:
        return Decision(Action.FETCH, "random seed: fresh image", stale=True, fresh=True)
    return Decision(Action.SERVE, "hit")
