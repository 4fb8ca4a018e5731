"""Section 2: miss overhead, the gateway against calling the fake upstream directly.

Both paths get the same wrk script at low concurrency (latency, not saturation), each request
with a seed no other request used, so every gateway request is a miss that goes upstream.
The upstream answers at once (latency 0) with one pre-encoded image in bytes of its own per
answer: what remains is the gateway's own cost per miss. A third run goes through a bare
proxy (bench/bareproxy.py: uvicorn and httpx passing the request on, nothing else), the floor
any Python proxy on the card's packages starts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import procstat
from bench.context import Context
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, running_module, start_gateway
from bench.upstream import generation_count, running_fake
from bench.wrk import WrkResult
from tests.fakes import FakeStability, ok

JSON = "application/json"


@dataclass
class Pair:
    """The direct, the gateway and the bare proxy's run for one image size."""

    image: str
    direct: WrkResult
    gateway: WrkResult
    gateway_upstream_calls: int
    gateway_cpu_seconds: float  # user + system of the gateway's processes, measured run
    bare: WrkResult
    bare_cpu_seconds: float

    def difference(self, percentile: str, through: WrkResult | None = None) -> float:
        through = through or self.gateway
        return through.latency_ms[percentile] - self.direct.latency_ms[percentile]

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "direct": self.direct.to_json(),
            "gateway": self.gateway.to_json(),
            "gateway_upstream_calls": self.gateway_upstream_calls,
            "gateway_cpu_seconds": self.gateway_cpu_seconds,
            "bare": self.bare.to_json(),
            "bare_cpu_seconds": self.bare_cpu_seconds,
        }


def _pair(ctx: Context, image: str, noisy: bool) -> Pair:
    o = ctx.options
    # reuse_pixels: the fake encodes the image once and gives each answer bytes of its own,
    # so both runs measure HTTP and the gateway, not the fake's PNG encoder (0.2 s per
    # noisy image, which made the two p50s ~190 ms each and their difference noise).
    with running_fake(ok(noisy=noisy, reuse_pixels=True)) as fake:
        gateway = start_gateway(ctx.work, f"miss-{image}", fake.url, rate=UNTHROTTLED)
        try:
            assert gateway.pid is not None
            ctx.log(f"miss: {image} image, direct: {o.warmup:g} s warm-up + {o.miss_duration:g} s")
            direct, _, _ = _unique_run(ctx, fake, fake.url, None)
            ctx.log(f"miss: {image} image, gateway")
            through, calls, cpu = _unique_run(ctx, fake, gateway.url, gateway.pid)
        finally:
            gateway.stop()
        ctx.log(f"miss: {image} image, bare proxy (uvicorn + httpx)")
        with running_module("bench.bareproxy", "--upstream", fake.url) as (port, pid):
            floor, _, bare_cpu = _unique_run(ctx, fake, f"http://127.0.0.1:{port}", pid)
    return Pair(image, direct, through, calls, cpu, floor, bare_cpu)


def _unique_run(
    ctx: Context, fake: FakeStability, url: str, pid: int | None
) -> tuple[WrkResult, int, float]:
    """Warm-up (discarded), then the measured run, the upstream calls made during it and
    the CPU time process `pid` (and its children) used meanwhile."""
    o = ctx.options
    if o.warmup > 0:
        ctx.wrk(url, JSON, duration=o.warmup, connections=o.miss_connections, unique=True)
    before = generation_count(fake)
    cpu_before = sum(procstat.cpu_seconds(pid)) if pid else 0.0
    result = ctx.wrk(
        url, JSON, duration=o.miss_duration, connections=o.miss_connections, unique=True
    )
    cpu = sum(procstat.cpu_seconds(pid)) - cpu_before if pid else 0.0
    return result, generation_count(fake) - before, cpu


BARE = "bare proxy (uvicorn + httpx)"

# Issue 14's targets: the small image's overhead is the gateway's fixed cost per miss; the
# realistic one adds what the image's bytes cost (decode, check, digest).
OVERHEAD_TARGETS = {"small": 1.0, "2.6 MB": 8.0}


def _rows(pair: Pair, how: str) -> list[Measurement]:
    rows = []
    runs = (("fake upstream directly", pair.direct), ("gateway", pair.gateway),
            (BARE, pair.bare))  # fmt: skip
    for path, result in runs:
        for percentile in ("p50", "p99"):
            rows.append(
                Measurement(
                    f"miss latency {percentile}, {pair.image} image",
                    path,
                    result.latency_ms[percentile],
                    "ms",
                    f"{how}; {result.requests} requests, {result.failed} failed",
                )
            )
    rows += [
        Measurement(
            f"miss overhead p50, {pair.image} image",
            "gateway - direct",
            pair.difference("p50"),
            "ms",
            "difference of the two p50s above",
            Target("<=", OVERHEAD_TARGETS.get(pair.image, 2.0)),
        ),
        Measurement(
            f"miss overhead p99, {pair.image} image",
            "gateway - direct",
            pair.difference("p99"),
            "ms",
            "difference of the two p99s above",
        ),
        Measurement(
            f"gateway CPU per miss, {pair.image} image",
            "gateway",
            1000 * pair.gateway_cpu_seconds / pair.gateway.requests
            if pair.gateway.requests
            else None,
            "ms",
            "user+sys of the gateway's processes (/proc) over the measured run / requests: "
            "moves much less with other load than the latency difference",
        ),
        Measurement(
            f"miss overhead p50, {pair.image} image",
            f"{BARE} - direct",
            pair.difference("p50", pair.bare),
            "ms",
            "difference of the p50s: the floor of the stack, with none of the gateway's work",
        ),
        Measurement(
            f"CPU per miss, {pair.image} image",
            BARE,
            1000 * pair.bare_cpu_seconds / pair.bare.requests if pair.bare.requests else None,
            "ms",
            "user+sys of the bare proxy's process over the measured run / requests",
        ),
    ]
    return rows


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    section = SectionResult("miss", "miss overhead against the bare upstream")
    sizes = [("small", False)] + ([("2.6 MB", True)] if o.miss_realistic else [])
    pairs = [_pair(ctx, image, noisy) for image, noisy in sizes]
    how = (
        f"wrk -c{o.miss_connections}, unique seed per request, Accept: application/json, "
        f"upstream latency 0, {o.miss_duration:g} s after {o.warmup:g} s warm-up"
    )
    for pair in pairs:
        section.add(*_rows(pair, how))
        section.notes.append(
            f"{pair.image} image: the gateway run made {pair.gateway_upstream_calls} upstream "
            f"calls for {pair.gateway.requests} measured requests (every request is a miss, so "
            f"these match up to a request cut off at the end)."
        )
    section.raw["pairs"] = [p.to_json() for p in pairs]
    section.notes += [
        "The fake encodes its PNG once (solid colour for 'small', a few KB; 6-bit noise for "
        "'2.6 MB') and gives each answer bytes of its own (a tEXt chunk naming the request), "
        "so every miss is a new blob; all paths pay its base64 and JSON alike, so the "
        "difference is the proxy's cost: for the gateway, parse and key the request, limiter "
        "and lease transactions, the upstream hop, base64 decode, the PNG's pixel check and "
        "the answer (SHA-256 and the disk write come after it, beside the next miss).",
        "The fake upstream runs in the bench's Python process; wrk is the only client, so the "
        "bench process is otherwise idle while measuring.",
    ]
    return section
