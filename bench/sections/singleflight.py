"""Section 4: single-flight, N identical requests at once must cost one upstream call.

The upstream answers after a delay, so every request arrives while the first is in flight.
Run with one worker process (in-process single-flight), with two (the cross-process
lease in the shared cache), and with two replicas on one Redis (the lease in Redis, the
requests spread over both).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.context import Context
from bench.load import Tally, post_all
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, running_redis, start_gateway, start_replicas
from bench.upstream import HIT_SEED, generation_body, generation_count, running_fake
from tests.fakes import ok

WORKER_COUNTS = (1, 2)
REDIS_REPLICAS = 2


def _run_once(ctx: Context, workers: int) -> tuple[int, Tally]:
    o = ctx.options
    n = o.singleflight_requests
    body = generation_body("A red fox in fresh snow", HIT_SEED)
    with running_fake(ok(delay=o.upstream_latency, noisy=True)) as fake:
        gateway = start_gateway(
            ctx.work, f"singleflight-{workers}w", fake.url, rate=UNTHROTTLED, workers=workers
        )
        try:
            ctx.log(f"{n} identical requests, --workers {workers}")
            tally = asyncio.run(post_all(gateway.url, [body] * n, concurrency=n))
        finally:
            gateway.stop()
        return generation_count(fake), tally


def _run_replicas(ctx: Context, replicas: int) -> tuple[int, Tally]:
    o = ctx.options
    n = o.singleflight_requests
    body = generation_body("A red fox in fresh snow", HIT_SEED)
    with (
        running_redis(ctx.work, "singleflight-redis") as redis,
        running_fake(ok(delay=o.upstream_latency, noisy=True)) as fake,
    ):
        gateways = start_replicas(ctx.work, "singleflight-redis", fake.url, redis.url,
                                  rate=UNTHROTTLED, count=replicas)  # fmt: skip
        try:
            ctx.log(f"{n} identical requests over {replicas} replicas on Redis")
            urls = [g.url for g in gateways]
            tally = asyncio.run(post_all(urls, [body] * n, concurrency=n))
        finally:
            for gateway in gateways:
                gateway.stop()
        return generation_count(fake), tally


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    section = SectionResult("singleflight", "identical concurrent requests")
    raw: list[dict[str, Any]] = []
    runs = [(f"gateway --workers {w}", w, lambda w=w: _run_once(ctx, w)) for w in WORKER_COUNTS]
    runs.append((f"{REDIS_REPLICAS} replicas on Redis", 1,
                 lambda: _run_replicas(ctx, REDIS_REPLICAS)))  # fmt: skip
    for who, workers, measure in runs:
        calls, tally = measure()
        section.add(
            Measurement(
                "upstream calls",
                who,
                float(calls),
                "",
                f"{o.singleflight_requests} identical POSTs sent at once on separate "
                f"connections; generation calls counted by the fake",
                Target("==", 1),
            )
        )
        section.notes.append(
            f"{who}: answers {tally.statuses()}, X-Cache {tally.caches()}, "
            f"{len(tally.digests())} distinct image(s) among the 200s, "
            f"transport errors {dict(tally.errors)}."
        )
        raw.append({"contender": who, "workers": workers, "upstream_calls": calls,
                    "client": tally.to_json()})  # fmt: skip
    section.notes.append(
        f"Upstream latency {o.upstream_latency:g} s and a ~2.6 MB image, so all requests "
        "overlap the first one's upstream call."
    )
    section.raw["runs"] = raw
    return section
