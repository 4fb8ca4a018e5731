"""Section 8: cold hits: a working set four times the gateway's memory tier, against nginx
serving the same set from its proxy cache (the page cache, with sendfile).

N distinct requests (one seed each) are each sent once to fill both caches; then wrk cycles
through all N, each of its threads from its own place, so most of the gateway's hits are
read from disk (one thread hop, one read of the blob, its SHA-256 checked once per process)
rather than from memory. N x the image size is at least 4 x memory_tier_bytes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import httpx

from bench import procstat, wrk
from bench.context import Context
from bench.nginx import NginxCache
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, start_gateway
from bench.upstream import (
    SEED_PLACEHOLDER,
    TEXT_TO_IMAGE,
    generation_body,
    generation_count,
    running_fake,
)
from tests.fakes import FakeStability, ok

PNG = "image/png"
IMAGE_BYTES = 2_600_000  # the fake's noisy 1344x768 PNG
FIRST_SEED = 7_000_000
MEMORY_TIER = 64 * 1024 * 1024  # the gateway's default
QUICK_MEMORY_TIER = 16 * 1024 * 1024


def body_template(folder: Path) -> Path:
    text = json.dumps(generation_body("A cold harbour at night", SEED_PLACEHOLDER))
    path = folder / "cold.json"
    path.write_bytes(text.replace(f'"{SEED_PLACEHOLDER}"', SEED_PLACEHOLDER).encode())
    return path


def fill(url: str, template: Path, count: int) -> list[str]:
    """Each request once, byte for byte as wrk will send it (nginx keys on the raw body)."""
    caches = []
    text = template.read_bytes()
    with httpx.Client(timeout=120) as client:
        for i in range(count):
            body = text.replace(SEED_PLACEHOLDER.encode(), str(FIRST_SEED + i).encode())
            response = client.post(
                f"{url}{TEXT_TO_IMAGE}",
                content=body,
                headers={"Accept": PNG, "Content-Type": "application/json"},
            )
            response.raise_for_status()
            caches.append(response.headers.get("x-cache") or response.headers.get(
                "x-cache-status", "?"))  # fmt: skip
    return caches


def _run(ctx: Context, url: str, body: Path, count: int, pid: int, duration: float
         ) -> tuple[wrk.WrkResult, tuple[float, float]]:  # fmt: skip
    o = ctx.options
    job = wrk.WrkJob(url=f"{url}{TEXT_TO_IMAGE}", body_file=body, accept=PNG,
                     connections=o.connections, threads=o.threads, duration=duration,
                     first_seed=FIRST_SEED, cycle=count)  # fmt: skip
    if o.warmup > 0:
        wrk.run(ctx.tools["wrk"], wrk.WrkJob(**{**job.__dict__, "duration": o.warmup}))
    user, system = procstat.cpu_seconds(pid)
    result = wrk.run(ctx.tools["wrk"], job)
    user_after, system_after = procstat.cpu_seconds(pid)
    return result, (user_after - user, system_after - system)


def _rows(contender: str, result: wrk.WrkResult, cpu: tuple[float, float], calls: int,
          how: str) -> list[Measurement]:  # fmt: skip
    per_hit = 1000 * sum(cpu) / result.requests if result.requests else None
    return [
        Measurement("cold hit throughput", contender, result.rps, "req/s", how),
        Measurement("cold hit latency p50", contender, result.latency_ms["p50"], "ms", how),
        Measurement("cold hit latency p99", contender, result.latency_ms["p99"], "ms", how),
        Measurement("server CPU per cold hit", contender, per_hit, "ms", "user+sys / requests"),
        Measurement("failed requests", contender, float(result.failed), "", how, Target("==", 0)),
        Measurement(
            "upstream calls while measured",
            contender,
            float(calls),
            "",
            "generation calls the fake received during warm-up + run",
            Target("==", 0),
        ),
    ]


def run(ctx: Context) -> SectionResult:
    o = ctx.options
    tier = QUICK_MEMORY_TIER if o.quick else MEMORY_TIER
    count = math.ceil(4 * tier / IMAGE_BYTES) + 4
    section = SectionResult("cold", f"cold hits: {count} entries, 4x the memory tier")
    folder = ctx.work / "cold"
    folder.mkdir(parents=True, exist_ok=True)
    body = body_template(folder)
    how = (f"wrk -t{o.threads} -c{o.connections}, {o.duration:g} s after {o.warmup:g} s, "
           f"cycling through {count} cached requests, Accept: image/png")  # fmt: skip
    fake: FakeStability
    with running_fake(ok(noisy=True)) as fake:
        gateway = start_gateway(
            ctx.work, "cold-gateway", fake.url, rate=UNTHROTTLED, workers=o.workers,
            settings={"memory_tier_bytes": tier},
        )  # fmt: skip
        try:
            ctx.log(f"cold: filling the gateway with {count} entries")
            filled = fill(gateway.url, body, count)
            before = generation_count(fake)
            assert gateway.pid is not None
            g_result, g_cpu = _run(ctx, gateway.url, body, count, gateway.pid, o.duration)
            g_calls = generation_count(fake) - before
        finally:
            gateway.stop()
        nginx = NginxCache(ctx.tools["nginx"], ctx.work / "cold-nginx", fake.url,
                           workers=o.workers)  # fmt: skip
        with nginx:
            assert nginx.process is not None
            ctx.log(f"cold: filling nginx with {count} entries")
            nginx_filled = fill(nginx.url, body, count)
            before = generation_count(fake)
            n_result, n_cpu = _run(ctx, nginx.url, body, count, nginx.process.pid, o.duration)
            n_calls = generation_count(fake) - before
    section.add(*_rows("gateway", g_result, g_cpu, g_calls, how))
    section.add(*_rows("nginx proxy_cache, sendfile on", n_result, n_cpu, n_calls, how))
    section.add(
        Measurement(
            "cold hit throughput ratio",
            "gateway / nginx",
            g_result.rps / n_result.rps if n_result.rps else None,
            "x",
            "ratio of the two runs above",
            Target(">=", 0.8),
        ),
        Measurement(
            "cold hit p99 ratio",
            "gateway / nginx",
            g_result.latency_ms["p99"] / n_result.latency_ms["p99"]
            if n_result.latency_ms["p99"]
            else None,
            "x",
            "ratio of the two runs above",
        ),
    )
    section.notes += [
        f"Working set: {count} entries of ~2.6 MB = ~{count * IMAGE_BYTES / 2**20:.0f} MiB, "
        f"against a memory tier of {tier / 2**20:.0f} MiB (images plus their base64 count "
        "against it, so it holds about a tenth of them).",
        f"Fill: gateway X-Cache {sorted(set(filled))}, nginx {sorted(set(nginx_filled))}.",
        f"Server processes: gateway --workers {o.workers}, nginx worker_processes {o.workers}.",
    ]
    section.raw["runs"] = {"gateway": g_result.to_json(), "nginx": n_result.to_json()}
    return section
