"""Section 3: limiter conformance under a backlog of distinct requests, at a scaled limit.

The fake upstream sits behind UpstreamRateLimit, which answers 429 as Stability does when
a sliding window holds more calls than the limit and records every arrival; it runs in a
process of its own (bench.fakeproc), so that the load client cannot delay its stamps. The
client keeps twice the limit of distinct requests outstanding, so the gateway always has a
queue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bench import fakeproc
from bench.context import Context
from bench.load import Tally, backlog
from bench.report import Measurement, SectionResult, Target
from bench.servers import (
    RateLimit,
    contention,
    late_sends,
    running_redis,
    start_gateway,
    start_replicas,
)
from tests.fakes.stability import count_max_in_window


def utilisation(times: list[float], limit: int, period: float) -> float | None:
    """Share of the allowed rate used, from whole multiples of the limit.

    Under a sliding-window limit, call number i + limit can come no earlier than call i plus
    one period, so k * limit calls take at least k periods: t[k*limit] - t[0] >= k * period.
    Utilisation is k * period / (t[k*limit] - t[0]) for the largest k the calls allow: 1.0
    for a limiter that sends exactly at the limit, whether it paces evenly or in bursts,
    and not flattered by where a measuring window happens to start. None for fewer than
    limit + 1 calls.
    """
    ordered = sorted(times)
    k = (len(ordered) - 1) // limit
    if k < 1:
        return None
    span = ordered[k * limit] - ordered[0]
    return k * period / span if span > 0 else None


@dataclass
class LimiterRun:
    workers: int
    arrivals: list[float]
    refused: int
    tally: Tally
    seconds: float
    replicas: int = 0  # > 0: that many gateways sharing one Redis (one worker each)
    contention: tuple[int, int] = (0, 0)  # Redis limiter: (committed, retried) changes
    late_ms: list[int] = field(default_factory=list)  # sends counted from their write

    @property
    def who(self) -> str:
        if self.replicas:
            return f"{self.replicas} replicas on Redis"
        return f"gateway --workers {self.workers}"

    def in_run(self) -> list[float]:
        """Arrivals from the first one until the load stopped (queued stragglers excluded)."""
        if not self.arrivals:
            return []
        start = min(self.arrivals)
        return [t for t in self.arrivals if t < start + self.seconds]

    def to_json(self) -> dict[str, Any]:
        start = min(self.arrivals, default=0.0)
        return {
            "workers": self.workers,
            "replicas": self.replicas,
            "redis_limiter_changes_committed": self.contention[0],
            "redis_limiter_contention_retries": self.contention[1],
            "upstream_arrivals": len(self.arrivals),
            "upstream_arrivals_during_load": len(self.in_run()),
            "upstream_429s": self.refused,
            "sends_counted_from_their_write": len(self.late_ms),
            "late_ms_after_grant": sorted(self.late_ms),
            "arrival_offsets_s": [round(t - start, 4) for t in sorted(self.arrivals)],
            "client": self.tally.to_json(),
        }


def _run_once(ctx: Context, workers: int) -> LimiterRun:
    o = ctx.options
    rate = RateLimit(o.limiter_limit, o.limiter_period)
    with fakeproc.running(o.upstream_latency, rate.limit, rate.period) as fake:
        gateway = start_gateway(
            ctx.work, f"limiter-{workers}w", fake.url, rate=rate, workers=workers
        )
        try:
            ctx.log(f"--workers {workers}, {o.limiter_duration:g} s backlog")
            tally = asyncio.run(
                backlog(
                    gateway.url,
                    2 * rate.limit,
                    o.limiter_duration,
                    ctx.first_seed(),
                    timeout=o.limiter_duration + 30,
                )
            )
        finally:
            gateway.stop()
        arrivals, refused = fake.arrivals()
        return LimiterRun(workers, arrivals, refused, tally, o.limiter_duration,
                          late_ms=late_sends([gateway]))  # fmt: skip


def _run_replicas(ctx: Context, replicas: int) -> LimiterRun:
    """The same load spread over `replicas` gateways (one worker each) on one Redis."""
    o = ctx.options
    rate = RateLimit(o.limiter_limit, o.limiter_period)
    with (
        running_redis(ctx.work, "limiter-redis") as redis,
        fakeproc.running(o.upstream_latency, rate.limit, rate.period) as fake,
    ):
        gateways = start_replicas(ctx.work, "limiter-redis", fake.url, redis.url, rate=rate,
                                  count=replicas)  # fmt: skip
        try:
            ctx.log(f"{replicas} replicas on Redis, {o.limiter_duration:g} s backlog")
            tally = asyncio.run(
                backlog(
                    [g.url for g in gateways],
                    2 * rate.limit,
                    o.limiter_duration,
                    ctx.first_seed(),
                    timeout=o.limiter_duration + 30,
                )
            )
        finally:
            for gateway in gateways:
                gateway.stop()
        arrivals, refused = fake.arrivals()
        return LimiterRun(1, arrivals, refused, tally, o.limiter_duration,
                          replicas=replicas, contention=contention(gateways),
                          late_ms=late_sends(gateways))  # fmt: skip


def _rows(run: LimiterRun, limit: int, period: float) -> list[Measurement]:
    who = run.who
    used = utilisation(run.in_run(), limit, period)
    return [
        Measurement(
            "most upstream calls in any window",
            who,
            float(count_max_in_window(run.arrivals, period)),
            f"per {period:g} s",
            "every arrival at the fake, any half-open window [t, t + period)",
            Target("<=", limit),
        ),
        Measurement(
            "share of the allowed rate used",
            who,
            None if used is None else 100 * used,
            "%",
            "k*period / (t[k*limit] - t[0]) over the arrivals while loaded; see notes",
            Target(">=", 95, " %"),
        ),
        Measurement(
            "upstream 429s",
            who,
            float(run.refused),
            "",
            "429s the rate-enforcing wrapper in front of the fake sent",
            Target("==", 0),
        ),
    ]


def _late(late_ms: list[int]) -> str:
    if not late_ms:
        return "no send was written late enough after its grant to be counted from its write"
    ordered = sorted(late_ms)
    return (
        f"{len(ordered)} sends were written late enough after their grant to be counted from "
        f"their write ({ordered[len(ordered) // 2]} ms after it at the median, {ordered[-1]} "
        f"ms at most)"
    )


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    section = SectionResult("limiter", "rate-limiter conformance")
    runs = [_run_once(ctx, workers) for workers in o.limiter_workers]
    runs.append(_run_replicas(ctx, 2))
    for r in runs:
        section.add(*_rows(r, o.limiter_limit, o.limiter_period))
        if r.replicas:
            committed, retried = r.contention
            section.add(
                Measurement(
                    "Redis limiter contention retries",
                    r.who,
                    100 * retried / committed if committed else None,
                    "%",
                    f"changes made again because another replica committed first, per "
                    f"committed change ({retried} of {committed}), from the gateways' logs",
                )
            )
        section.notes.append(
            f"{r.who}: {len(r.in_run())} upstream calls while loaded "
            f"({len(r.arrivals)} in all), client answers {r.tally.statuses()}, "
            f"transport errors {dict(r.tally.errors)}, {r.tally.cancelled} requests still "
            f"queued when the load stopped were cancelled by the client; "
            f"{len(r.arrivals) - len(r.in_run())} upstream calls came after the load stopped; "
            f"{_late(r.late_ms)}."
        )
    section.notes += [
        f"Limit {o.limiter_limit} per {o.limiter_period:g} s (the production 150 per 60 s, "
        f"scaled), the configured margin added by the gateway, the disk limiter backend "
        f"(default), upstream latency {o.upstream_latency:g} s, a backlog of "
        f"{2 * o.limiter_limit} distinct requests for {o.limiter_duration:g} s.",
        "Utilisation: k*limit calls need at least k periods under any conforming limiter, so "
        "k*period over the time they took is the share of the allowed rate used; a gateway "
        "margin of m seconds per period caps it at period / (period + m).",
    ]
    section.raw["runs"] = [r.to_json() for r in runs]
    return section
