"""The cache decision table, exhaustively over the interesting combinations."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from cache.model import EntryMeta
from gateway.policy import Action, Controls, decide

REAL = EntryMeta("k", "v1", 1000.0, (), source="upstream")
PLACEHOLDER = EntryMeta("k", "v1", 1000.0, (), source="offline")


def run(mode="online", meta=None, now=1001.0, ttl=0.0, refresh=False, random=False, **controls):
    return decide(
        mode=mode, controls=Controls(**controls), meta=meta, now=now, ttl=ttl,
        refresh_random=refresh, random_seed=random,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "action", "stale", "store"),
    [
        ({}, Action.FETCH, False, True),
        ({"meta": REAL}, Action.SERVE, False, True),
        ({"meta": PLACEHOLDER}, Action.FETCH, False, True),  # placeholders never serve online
        ({"meta": REAL, "no_cache": True}, Action.FETCH, True, True),
        ({"meta": REAL, "no_store": True}, Action.FETCH, False, False),
        ({"only_if_cached": True}, Action.MISS, False, True),
        ({"meta": REAL, "only_if_cached": True}, Action.SERVE, False, True),
        ({"meta": REAL, "ttl": 10, "now": 1005.0}, Action.SERVE, False, True),
        ({"meta": REAL, "ttl": 10, "now": 1011.0}, Action.FETCH, True, True),
        ({"meta": REAL, "refresh": True, "random": True}, Action.FETCH, True, True),
        ({"meta": REAL, "refresh": True, "random": False}, Action.SERVE, False, True),
        ({"meta": REAL, "refresh": False, "random": True}, Action.SERVE, False, True),
        ({"mode": "offline"}, Action.PLACEHOLDER, False, True),
        ({"mode": "offline", "meta": REAL}, Action.SERVE, False, True),
        ({"mode": "offline", "meta": PLACEHOLDER}, Action.SERVE, False, True),
        ({"mode": "offline", "no_store": True}, Action.PLACEHOLDER, False, False),
        ({"mode": "replay"}, Action.MISS, False, True),
        ({"mode": "replay", "meta": REAL}, Action.SERVE, False, True),
        ({"mode": "replay", "meta": REAL, "no_store": True}, Action.MISS, False, False),
    ],
)
def test_decision(kwargs: dict, action: Action, stale: bool, store: bool) -> None:
    decision = run(**kwargs)
    assert (decision.action, decision.stale, decision.store) == (action, stale, store)


def test_controls_from_headers() -> None:
    c = Controls.from_headers(
        Headers({"cache-control": "No-Cache, max-age=0", "x-allow-cached": "true"}),
        allow_cached_default=False,
    )
    assert c.no_cache and not c.no_store and c.allow_cached
    default = Controls.from_headers(Headers({}), allow_cached_default=True)
    assert default.allow_cached
    refused = Controls.from_headers(Headers({"x-allow-cached": "false"}), allow_cached_default=True)
    assert not refused.allow_cached
