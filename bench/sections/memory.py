"""Section 5: the gateway's peak RSS while serving N hits of the benchmark image.

wrk has no request-count option, so the hits are sent in wrk runs of a few seconds until
the count is reached; the exact number served is reported. RSS of every gateway process is
sampled every 50 ms, and the kernel's own high-water mark (VmHWM) catches peaks between
samples. Half the hits ask for PNG, then half for JSON (the SDKs' default), so the count
covers both answer paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from bench import procstat
from bench.context import Context
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, start_gateway
from bench.upstream import TEXT_TO_IMAGE, hit_body, running_fake
from tests.fakes import ok

LIMIT_MIB = 200.0
MAX_CHUNKS = 50
FIRST_CHUNK_SECONDS = 1.0


@dataclass
class Phase:
    accept: str
    requests: int
    chunks: int
    seconds: float
    peak_rss_mib: float  # most summed RSS seen at one sample
    peak_hwm_mib: float  # sum of each process's VmHWM at the end of the phase
    rss_after_mib: float


def _hits(ctx: Context, url: str, accept: str, count: int) -> tuple[int, int, float]:
    """Send at least `count` hits in wrk runs: (requests served, runs, seconds)."""
    served, chunks, seconds = 0, 0, 0.0
    duration = FIRST_CHUNK_SECONDS
    while served < count and chunks < MAX_CHUNKS:
        result = ctx.wrk(url, accept, duration=duration)
        if result.failed:
            raise RuntimeError(f"{result.failed} failed requests during the memory run")
        served += result.requests
        chunks += 1
        seconds += result.duration_s
        rate = served / seconds if seconds else 0.0
        remaining = count - served
        duration = max(1.0, remaining / rate) if rate else FIRST_CHUNK_SECONDS
    return served, chunks, seconds


def _phase(ctx: Context, url: str, pid: int, accept: str) -> Phase:
    n = ctx.options.memory_requests // 2
    ctx.log(f"memory: {n} hits, Accept: {accept}")
    with procstat.MemorySampler(pid) as sampler:
        served, chunks, seconds = _hits(ctx, url, accept, n)
    sample = sampler.result
    return Phase(
        accept,
        served,
        chunks,
        seconds,
        sample.peak_rss_total,
        sample.peak_hwm_total,
        sample.last_rss_total,
    )


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    section = SectionResult("memory", f"gateway RSS over {o.memory_requests:,} hits")
    with running_fake(ok(noisy=True)) as fake:
        gateway = start_gateway(ctx.work, "memory", fake.url, rate=UNTHROTTLED, workers=o.workers)
        try:
            assert gateway.pid is not None
            started_mib = procstat.rss_now_mib(gateway.pid)
            httpx.post(
                f"{gateway.url}{TEXT_TO_IMAGE}",
                content=hit_body(),
                timeout=120,
                headers={"Content-Type": "application/json"},
            ).raise_for_status()
            warm_mib = procstat.rss_now_mib(gateway.pid)
            phases = [
                _phase(ctx, gateway.url, gateway.pid, accept)
                for accept in ("image/png", "application/json")
            ]
        finally:
            gateway.stop()
    who = f"gateway --workers {o.workers}"
    how = (
        f"summed VmRSS of the gateway's processes, sampled every 50 ms; wrk -c{o.connections} hits"
    )
    section.add(
        Measurement("RSS after start", who, started_mib, "MiB", "VmRSS before any request"),
        Measurement(
            "RSS after the cache-filling miss",
            who,
            warm_mib,
            "MiB",
            "VmRSS after one miss of the ~2.6 MB image",
        ),
    )
    for p in phases:
        label = "PNG" if p.accept == "image/png" else "JSON"
        section.add(
            Measurement(
                f"peak RSS during {p.requests:,} {label} hits",
                who,
                p.peak_rss_mib,
                "MiB",
                how,
                Target("<=", LIMIT_MIB, " MiB"),
            ),
            Measurement(
                f"RSS after {p.requests:,} {label} hits",
                who,
                p.rss_after_mib,
                "MiB",
                "VmRSS once the phase's last wrk run ended",
                Target("<=", LIMIT_MIB, " MiB"),
            ),
        )
        section.notes.append(
            f"{label} phase: {p.requests:,} hits in {p.chunks} wrk run(s) over {p.seconds:.1f} s; "
            f"VmHWM (kernel high-water mark, summed over processes) {p.peak_hwm_mib:.1f} MiB "
            f"by its end (phases run in order, so the JSON figure covers both)."
        )
    section.raw["phases"] = [p.__dict__ for p in phases]
    section.raw["rss_start_mib"] = started_mib
    section.raw["rss_after_miss_mib"] = warm_mib
    return section
