"""Section 4: single-flight, N identical requests at once must cost one upstream call.

The upstream answers after a delay, so every request arrives while the first is in flight.
Run with one worker process (in-process single-flight) and with two (the cross-process
lease in the shared cache).
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.context import Context
from bench.load import Tally, post_all
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, start_gateway
from bench.upstream import HIT_SEED, generation_body, generation_count, running_fake
from tests.fakes import ok

WORKER_COUNTS = (1, 2)


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


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    section = SectionResult("singleflight", "identical concurrent requests")
    raw: list[dict[str, Any]] = []
    for workers in WORKER_COUNTS:
        calls, tally = _run_once(ctx, workers)
        section.add(
            Measurement(
                "upstream calls",
                f"gateway --workers {workers}",
                float(calls),
                "",
                f"{o.singleflight_requests} identical POSTs sent at once on separate "
                f"connections; generation calls counted by the fake",
                Target("==", 1),
            )
        )
        section.notes.append(
            f"--workers {workers}: answers {tally.statuses()}, X-Cache {tally.caches()}, "
            f"{len(tally.digests())} distinct image(s) among the 200s, "
            f"transport errors {dict(tally.errors)}."
        )
        raw.append({"workers": workers, "upstream_calls": calls, "client": tally.to_json()})
    section.notes.append(
        f"Upstream latency {o.upstream_latency:g} s and a ~2.6 MB image, so all requests "
        "overlap the first one's upstream call."
    )
    section.raw["runs"] = raw
    return section
