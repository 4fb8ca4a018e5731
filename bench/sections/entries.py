"""Section "entries": GET /cache/entries with filters at 100,000 entries, Redis and local.

The indexes are filled directly (no images: listing reads only the index), the Redis one
through the same Lua script every put runs, the local one through the same SQLite insert,
with prompts drawn from a small vocabulary so that a rare word matches about 1 % of the
entries and a common one most of them. Then a gateway (replay mode: no upstream) on each
answers the same queries; each is asked `REPEATS` times and the median time (the client's:
request sent to answer read) is reported.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.context import Context
from bench.report import Measurement, SectionResult
from bench.servers import running_redis
from cache.local.index import Index
from cache.model import ArtifactInfo, EntryMeta, prompt_text
from cache.redis import RedisConnection
from cache.redis.index import RedisIndex
from tests.fakes import GatewayProcess, gateway_env

REPEATS = 5
BATCH = 500
ENGINES = ("stable-diffusion-xl-1024-v1-0", "stable-diffusion-v1-6")
ROUTES = ("v1/text-to-image", "v2beta/stable-image/generate/core")
WORDS = ("mountain", "lake", "forest", "city", "river", "castle", "desert", "ocean", "storm")
RARE = "lighthouse"  # in 1 prompt in 100


def _metas(count: int, start: float) -> list[tuple[EntryMeta, str]]:
    rng = random.Random(11)
    rows = []
    for i in range(count):
        words = rng.sample(WORDS, 3) + ([RARE] if i % 100 == 0 else [])
        summary = {
            "engine": ENGINES[i % 2],
            "route": ROUTES[(i // 2) % 2],
            "prompts": [{"text": f"a {' and a '.join(words)}, cinematic", "weight": 1}],
        }
        artifact = ArtifactInfo(uuid.uuid4().hex * 2, 2_600_000, i, "SUCCESS", "image/png")
        meta = EntryMeta(uuid.uuid4().hex * 2, uuid.uuid4().hex, start + i * 0.01,
                         (artifact,), summary)  # fmt: skip
        rows.append((meta, prompt_text(summary)))
    return rows


async def _fill_redis(url: str, prefix: str, rows: list[tuple[EntryMeta, str]]) -> None:
    connection = RedisConnection(url, prefix=prefix)
    index = RedisIndex(connection)
    for i in range(0, len(rows), BATCH):
        await asyncio.gather(*(index.put(meta, prompt) for meta, prompt in rows[i : i + BATCH]))
    await connection.client.aclose()


def _fill_local(folder: Path, rows: list[tuple[EntryMeta, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    index = Index(folder / "index.sqlite3")
    with index.write() as db:
        for meta, prompt in rows:
            Index.insert(db, meta, prompt)
    index.close()


def _queries(count: int, start: float) -> dict[str, dict[str, Any]]:
    return {
        "newest page": {"limit": 50},
        "deep page (offset = half)": {"limit": 50, "offset": count // 2},
        "engine": {"engine": ENGINES[0]},
        "engine + route": {"engine": ENGINES[0], "route": ROUTES[1]},
        "since (newest half)": {"since": start + count * 0.005},
        f"prompt, rare word ({RARE}, 1 %)": {"q": RARE},
        "prompt, common word (mountain, 1/3)": {"q": "mountain"},
        "prompt + engine": {"q": RARE, "engine": ENGINES[0]},
    }


def _time(url: str, params: dict[str, Any]) -> tuple[float, int]:
    """Median ms over REPEATS, and the total the answer gave."""
    times, total = [], 0
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(REPEATS):
            started = time.perf_counter()
            response = client.get("/cache/entries", params=params)
            times.append(1000 * (time.perf_counter() - started))
            response.raise_for_status()
            total = int(response.json()["total"])
    return statistics.median(times), total


def _gateway(ctx: Context, name: str, **settings: object) -> GatewayProcess:
    folder = ctx.work / name
    folder.mkdir(parents=True, exist_ok=True)
    env = gateway_env(folder / "cache", mode="replay", **settings)
    return GatewayProcess(env, log_dir=folder).start(timeout=30)


def run(ctx: Context) -> SectionResult:
    count = ctx.options.entries_count
    section = SectionResult("entries", f"GET /cache/entries with filters at {count:,} entries")
    start = time.time() - count
    rows = _metas(count, start)
    queries = _queries(count, start)
    results: dict[str, dict[str, tuple[float, int]]] = {}
    with running_redis(ctx.work, "entries-redis") as redis:
        prefix = f"bench-entries-{uuid.uuid4().hex[:8]}:"
        began = time.monotonic()
        asyncio.run(_fill_redis(redis.url, prefix, rows))
        ctx.log(f"entries: {count:,} filled in Redis in {time.monotonic() - began:.1f} s")
        began = time.monotonic()
        _fill_local(ctx.work / "entries-local" / "cache", rows)
        ctx.log(f"entries: {count:,} filled locally in {time.monotonic() - began:.1f} s")
        for backend, settings in (
            ("redis", {"redis_url": redis.url, "redis_prefix": prefix}),
            ("local", {}),
        ):
            gateway = _gateway(ctx, f"entries-{backend}", **settings)
            try:
                results[backend] = {name: _time(gateway.url, q) for name, q in queries.items()}
            finally:
                gateway.stop()
    for name in queries:
        for backend in ("redis", "local"):
            ms, total = results[backend][name]
            section.add(
                Measurement(
                    f"/cache/entries: {name}",
                    backend,
                    ms,
                    "ms",
                    f"median of {REPEATS}, client-side; total = {total:,}",
                )
            )
    section.notes += [
        f"{count:,} entries, 2 engines x 2 routes, prompts of 3 words out of {len(WORDS)} plus "
        f"'{RARE}' in 1 in 100; pages of 50 (the API's default).",
        "Redis: pages without a prompt filter are ZREVRANGEBYSCORE + ZCOUNT on the sorted set "
        "the filters name; a prompt filter is a ZSCAN of every entry's prompt with a MATCH "
        "pattern (Redis compares, only matches come back), then sorted newest first. Local: "
        "SQLite indexes and an FTS5 trigram table.",
    ]
    section.raw["results"] = {
        b: {name: {"ms": ms, "total": total} for name, (ms, total) in r.items()}
        for b, r in results.items()
    }
    return section
