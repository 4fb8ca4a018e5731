"""Section 6: credits, a 15-image video script replayed three times.

The first run pays for every image; the second must be served from the cache; the third runs
after a gateway restart, to show that the cache (and so the saving) survives one. Requests go
5 at a time, as the video pipeline batches them, under the production rate limit.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.context import Context
from bench.load import Tally, post_all
from bench.report import Measurement, SectionResult, Target
from bench.servers import PRODUCTION, start_gateway
from bench.upstream import generation_body, generation_count, running_fake
from tests.fakes import ok

SCENES = (
    "A quiet harbour town at dawn",
    "Fishing boats leaving the harbour",
    "An old fisherman mending nets",
    "Gulls over a choppy grey sea",
    "A lighthouse on a rocky point",
    "Storm clouds gathering over the water",
    "Waves breaking over the harbour wall",
    "A family watching from a window",
    "A lifeboat launching into the storm",
    "Rescuers hauling a rope in heavy rain",
    "A boat returning through the spray",
    "The crowd cheering on the quay",
    "Calm sea under a clearing sky",
    "Nets drying in the evening sun",
    "The harbour lights at night",
)
BATCH = 5
TARGETS = (len(SCENES), 0, 0)


def script() -> list[dict[str, Any]]:
    """The 15 requests of one video, seed 0 (random) as the pipeline sends them."""
    return [generation_body(scene, 0) for scene in SCENES]


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    section = SectionResult("credits", "a 15-image script replayed three times")
    runs: list[tuple[int, Tally]] = []
    with running_fake(ok(delay=o.upstream_latency, noisy=True)) as fake:
        gateway = start_gateway(ctx.work, "credits", fake.url, rate=PRODUCTION)
        try:
            for number in (1, 2, 3):
                if number == 3:
                    gateway.restart(timeout=30)
                ctx.log(f"run {number}" + (" (after a restart)" if number == 3 else ""))
                before = generation_count(fake)
                tally = asyncio.run(post_all(gateway.url, script(), concurrency=BATCH))
                runs.append((generation_count(fake) - before, tally))
        finally:
            gateway.stop()
    first_images = runs[0][1].digests()
    for number, ((calls, tally), target) in enumerate(zip(runs, TARGETS, strict=True), 1):
        label = f"run {number}" + (", after a gateway restart" if number == 3 else "")
        section.add(
            Measurement(
                f"upstream calls, {label}",
                "gateway",
                float(calls),
                "",
                f"generation calls the fake received during the run; {len(SCENES)} "
                f"requests, {BATCH} at a time",
                Target("==", target),
            )
        )
        same = tally.digests() == first_images
        section.notes.append(
            f"Run {number}: answers {tally.statuses()}, X-Cache {tally.caches()}, "
            f"images {'identical to' if same else 'NOT the same as'} run 1's."
        )
    section.notes.append(
        f"Seed 0 (random) on every request, the default random_seed_policy 'cache', the "
        f"production limit (150 per 60 s), upstream latency {o.upstream_latency:g} s, "
        f"~2.6 MB images."
    )
    section.raw["runs"] = [{"upstream_calls": c, "client": t.to_json()} for c, t in runs]
    return section
