"""Section "redis-hit": cache-hit throughput and latency on the Redis backend, against the
local backend in the same run.

Three gateways in turn, one worker each, the same fake upstream and the same hit:

- local: the cache folder (the embedded default);
- Redis, hit_check "version": the memory tier asks Redis for the entry's version on every
  hit (one round trip: what TieredEntryStore does);
- Redis, hit_check "invalidation": the memory tier trusts its copy until a pub/sub message
  says the entry changed (no round trip per hit).

Each: wrk -c64 PNG hits (warm-up, then measured: req/s, p50, p99), then wrk -c1 (latency
alone, no queueing: p50 and p99). The added latency of a hit is the -c1 p50 on Redis minus
the local one. Server CPU per hit counts the gateway and, on Redis, redis-server too.

A second measurement, in process and much less sensitive to other load: the memory-tier
lookup alone (`get` of a held entry, what a hit costs before rendering), timed over
`LOOKUPS` calls one after another, for each backend: wall and CPU microseconds per hit.

All three gateways run at once and are measured in two rounds, the second in the reverse order,
and each figure is the mean of its two rounds: on a shared machine, load that comes and
goes then weighs on every contender alike rather than on whichever ran at that moment.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import httpx

from bench import procstat
from bench.context import Context
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, running_redis, start_gateway, start_replicas
from bench.upstream import TEXT_TO_IMAGE, generation_count, hit_body, running_fake
from cache.local import LocalEntryStore
from cache.memory import MemoryTier, TieredEntryStore
from cache.model import Artifact
from cache.redis import RedisBlobStore, RedisConnection, RedisEntryStore
from cache.redis.tier import InvalidatedTier
from tests.fakes import GatewayProcess, ok
from tests.fakes.images import png_bytes

PNG = "image/png"
LOOKUPS = 5000
CONTENDERS = ("local", "redis, hit_check=version", "redis, hit_check=invalidation")


def _prime(url: str) -> list[str]:
    seen = []
    for _ in range(2):
        response = httpx.post(
            f"{url}{TEXT_TO_IMAGE}",
            content=hit_body(),
            headers={"Content-Type": "application/json", "Accept": PNG},
            timeout=120,
        )
        response.raise_for_status()
        seen.append(response.headers.get("x-cache", "?"))
    return seen


async def _lookups(ctx: Context, redis_url: str) -> dict[str, tuple[float, float]]:
    """Microseconds (wall, CPU of this process) per memory-tier hit, per backend."""
    image = [Artifact(png_bytes(1344, 768), 1)]
    prefix = f"bench-lookup-{uuid.uuid4().hex[:8]}:"
    one = RedisConnection(redis_url, prefix=prefix)
    redis_store = RedisEntryStore(one, RedisBlobStore(one))
    local_store = LocalEntryStore(ctx.work / "lookup-local")
    tiers = {
        "local": TieredEntryStore(local_store, MemoryTier(64 * 1024**2)),
        "redis, hit_check=version": TieredEntryStore(redis_store, MemoryTier(64 * 1024**2)),
        "redis, hit_check=invalidation": InvalidatedTier(
            redis_store, MemoryTier(64 * 1024**2), one.listener
        ),
    }
    results = {}
    try:
        for who, tier in tiers.items():
            await tier.put("k", image, {})
            for _ in range(100):  # warm: connections made, the copy held and marked
                assert await tier.get("k") is not None
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(LOOKUPS):
                await tier.get("k")
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[who] = (1e6 * wall / LOOKUPS, 1e6 * cpu / LOOKUPS)
    finally:
        await local_store.close()
        await redis_store.close()
    return results


def _measure(
    ctx: Context, section: SectionResult, who: str, gateway: GatewayProcess, redis_pid: int | None
) -> dict[str, float]:
    o = ctx.options
    assert gateway.pid is not None
    ctx.log(f"redis-hit: {who}: {o.warmup:g} s warm-up + {o.duration:g} s at -c{o.connections}")
    before = procstat.cpu_seconds(redis_pid) if redis_pid else (0.0, 0.0)
    loaded, (user, system) = ctx.measured_wrk(gateway.url, PNG, gateway.pid, duration=o.duration)
    after = procstat.cpu_seconds(redis_pid) if redis_pid else (0.0, 0.0)
    redis_cpu = (after[0] - before[0]) + (after[1] - before[1])
    ctx.log(f"redis-hit: {who}: {o.duration:g} s at -c1")
    single = ctx.wrk(gateway.url, PNG, duration=o.duration, connections=1)
    return {
        "rps": loaded.rps,
        "p50": loaded.latency_ms["p50"],
        "p99": loaded.latency_ms["p99"],
        "failed": float(loaded.failed + single.failed),
        "cpu_ms": 1000 * (user + system + redis_cpu) / loaded.requests if loaded.requests else 0,
        "redis_cpu_ms": 1000 * redis_cpu / loaded.requests if loaded.requests else 0,
        "single_p50": single.latency_ms["p50"],
        "single_p99": single.latency_ms["p99"],
    }


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    section = SectionResult("redis-hit", "cache hits on the Redis backend vs the local one")
    rounds: dict[str, list[dict[str, float]]] = {who: [] for who in CONTENDERS}
    with running_fake(ok(noisy=True)) as fake, running_redis(ctx.work, "hits-redis") as redis:
        assert redis.process is not None
        gateways: dict[str, GatewayProcess] = {}
        try:
            gateways["local"] = start_gateway(
                ctx.work, "redis-hit-local", fake.url, rate=UNTHROTTLED
            )
            for check in ("version", "invalidation"):
                (gateways[f"redis, hit_check={check}"],) = start_replicas(
                    ctx.work, f"redis-hit-{check}", fake.url, redis.url,
                    rate=UNTHROTTLED, count=1, hit_check=check,
                )  # fmt: skip
            for who, gateway in gateways.items():
                section.notes.append(f"{who}: priming X-Cache {' then '.join(_prime(gateway.url))}")
            for order in (CONTENDERS, tuple(reversed(CONTENDERS))):
                for who in order:
                    redis_pid = None if who == "local" else redis.process.pid
                    rounds[who].append(_measure(ctx, section, who, gateways[who], redis_pid))
        finally:
            for gateway in gateways.values():
                gateway.stop()
        calls = generation_count(fake)
        ctx.log(f"redis-hit: {LOOKUPS} memory-tier lookups per backend, in process")
        lookups = asyncio.run(_lookups(ctx, redis.url))
    results = {
        who: {name: statistics.mean(r[name] for r in runs) for name in runs[0]}
        for who, runs in rounds.items()
    }
    how = (
        f"wrk -t{o.threads} -c{o.connections}, {o.duration:g} s after {o.warmup:g} s warm-up; "
        "mean of 2 rounds"
    )
    single_how = f"wrk -t{o.threads} -c1, {o.duration:g} s: latency with no queueing; 2 rounds"
    for who, r in results.items():
        section.add(
            Measurement("hit throughput", who, r["rps"], "req/s", how),
            Measurement("hit latency p50", who, r["p50"], "ms", how),
            Measurement("hit latency p99", who, r["p99"], "ms", how),
            Measurement("hit latency p50, one connection", who, r["single_p50"], "ms", single_how),
            Measurement("hit latency p99, one connection", who, r["single_p99"], "ms", single_how),
            Measurement(
                "server CPU per hit",
                who,
                r["cpu_ms"],
                "ms",
                f"gateway + redis-server user+sys CPU / requests, -c64 run (redis-server: "
                f"{r['redis_cpu_ms']:.3f} ms)",
            ),
            Measurement("failed requests", who, r["failed"], "", "wrk, both runs", Target("==", 0)),
        )
    base = results["local"]
    for who in CONTENDERS[1:]:
        r = results[who]
        section.add(
            Measurement(
                "hit throughput ratio",
                f"{who} / local",
                r["rps"] / base["rps"] if base["rps"] else None,
                "x",
                "req/s of the two -c64 runs above, same run",
                Target(">=", 0.9),
            ),
            Measurement(
                "hit throughput ratio, from CPU per hit",
                f"{who} / local",
                base["cpu_ms"] / r["cpu_ms"] if r["cpu_ms"] else None,
                "x",
                "local CPU per hit / this one's (redis-server's included): the throughput "
                "ratio where CPU is the bound, steadier than req/s on a shared machine",
            ),
            Measurement(
                "added latency of a hit",
                f"{who} - local",
                r["single_p50"] - base["single_p50"],
                "ms",
                "difference of the one-connection p50s",
            ),
        )
    lookup_how = f"{LOOKUPS} sequential TieredEntryStore.get of a held entry, in process"
    for who, (wall, cpu) in lookups.items():
        section.add(
            Measurement("memory-tier hit lookup, wall", who, wall, "µs", lookup_how),
            Measurement(
                "memory-tier hit lookup, CPU",
                who,
                cpu,
                "µs",
                lookup_how + " (this process only; redis-server's not counted)",
            ),
        )
    for who in CONTENDERS[1:]:
        section.add(
            Measurement(
                "added latency of a hit, lookup",
                f"{who} - local",
                lookups[who][0] - lookups["local"][0],
                "µs",
                "difference of the in-process lookup walls above",
            )
        )
    section.raw["lookups_us"] = lookups
    section.add(
        Measurement(
            "upstream calls",
            "all three",
            float(calls),
            "",
            "generation calls the fake saw (3 priming misses expected)",
            Target("==", 3),
        ),
    )
    section.notes += [
        "One worker per gateway; the three are measured one after another, in two rounds "
        "(the second reversed), on the same machine, with redis-server, the fake upstream and "
        "wrk sharing its cores.",
        "Every hit is answered from the replica's memory tier; what differs is how it knows "
        "the copy is still the shared one: nothing to ask (local: SQLite read on the event "
        "loop), a version round trip to Redis, or pub/sub invalidation (no round trip).",
    ]
    section.raw["results"] = results
    section.raw["rounds"] = rounds
    return section
