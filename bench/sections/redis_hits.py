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

All three run at once and are measured in two rounds, the second in the reverse order,
and each figure is the mean of its two rounds: on a shared machine, load that comes and
goes then weighs on every contender alike rather than on whichever ran at that moment.
"""

from __future__ import annotations

import statistics

import httpx

from bench import procstat
from bench.context import Context
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, running_redis, start_gateway, start_replicas
from bench.upstream import TEXT_TO_IMAGE, generation_count, hit_body, running_fake
from tests.fakes import GatewayProcess, ok

PNG = "image/png"
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
                "gateway (+ redis-server) user+sys CPU / requests, -c64 run",
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
                "added latency of a hit",
                f"{who} - local",
                r["single_p50"] - base["single_p50"],
                "ms",
                "difference of the one-connection p50s",
            ),
        )
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
