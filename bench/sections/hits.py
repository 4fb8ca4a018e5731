"""Section 1: cache-hit throughput and latency, gateway (PNG and JSON) against nginx.

All three contenders answer the same POST from their cache, warmed by one request before
any measurement, and must make no upstream call while measured (checked, not assumed).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import httpx

from bench.context import Context
from bench.nginx import NginxCache
from bench.report import Measurement, SectionResult, Target
from bench.servers import UNTHROTTLED, cache_stats, start_gateway
from bench.upstream import TEXT_TO_IMAGE, generation_count, hit_body, running_fake
from bench.wrk import WrkResult
from tests.fakes import FakeStability, ok

PNG, JSON = "image/png", "application/json"


@dataclass
class Run:
    """One contender's measured wrk run and what surrounds it."""

    contender: str
    result: WrkResult
    cpu_seconds: tuple[float, float]  # (user, system) during the measured run
    upstream_calls: int  # generation calls the fake saw during warm-up + measured run
    payload_bytes: int  # body of one answer

    def to_json(self) -> dict[str, Any]:
        return {
            "contender": self.contender,
            "wrk": self.result.to_json(),
            "server_cpu_seconds": {
                "user": round(self.cpu_seconds[0], 3),
                "system": round(self.cpu_seconds[1], 3),
            },
            "upstream_calls_during_runs": self.upstream_calls,
            "payload_bytes": self.payload_bytes,
        }


def _post(url: str, accept: str) -> httpx.Response:
    response = httpx.post(
        f"{url}{TEXT_TO_IMAGE}",
        content=hit_body(),
        headers={"Content-Type": "application/json", "Accept": accept},
        timeout=120,
    )
    response.raise_for_status()
    return response


def _prime(url: str, accept: str, header: str) -> list[str]:
    """Send the benchmark request twice, the first to fill the cache; the cache header of
    each answer (MISS then HIT expected), for the notes."""
    return [_post(url, accept).headers.get(header, "?") for _ in range(2)]


def _measure(
    ctx: Context, fake: FakeStability, contender: str, url: str, accept: str, pid: int
) -> Run:
    size = len(_post(url, accept).content)
    before = generation_count(fake)
    ctx.log(f"hits: {contender}: {ctx.options.warmup:g} s warm-up + {ctx.options.duration:g} s")
    result, cpu = ctx.measured_wrk(url, accept, pid, duration=ctx.options.duration)
    return Run(contender, result, cpu, generation_count(fake) - before, size)


def _gateway_runs(ctx: Context, fake: FakeStability, section: SectionResult) -> list[Run]:
    gateway = start_gateway(
        ctx.work, "hits-gateway", fake.url, rate=UNTHROTTLED, workers=ctx.options.workers
    )
    try:
        assert gateway.pid is not None
        seen = _prime(gateway.url, JSON, "X-Cache")
        section.notes.append(f"gateway priming: X-Cache {seen[0]} then {seen[1]}")
        stats_before = cache_stats(gateway)
        runs = [
            _measure(ctx, fake, "gateway, Accept: image/png", gateway.url, PNG, gateway.pid),
            _measure(
                ctx, fake, "gateway, Accept: application/json", gateway.url, JSON, gateway.pid
            ),
        ]
        stats_after = cache_stats(gateway)
        section.raw["gateway_stats_delta"] = {
            name: stats_after[name] - stats_before[name]
            for name in ("hits", "misses", "upstream_calls")
        }
    finally:
        gateway.stop()
    return runs


def _nginx_run(ctx: Context, fake: FakeStability, section: SectionResult) -> Run:
    nginx = NginxCache(
        ctx.tools["nginx"], ctx.work / "hits-nginx", fake.url, workers=ctx.options.workers
    )
    with nginx:
        assert nginx.process is not None
        seen = _prime(nginx.url, PNG, "X-Cache-Status")
        section.notes.append(f"nginx priming: X-Cache-Status {seen[0]} then {seen[1]}")
        section.raw["nginx_config"] = nginx.config_path.read_text()
        return _measure(
            ctx, fake, "nginx proxy_cache, sendfile on", nginx.url, PNG, nginx.process.pid
        )


def _rows(run: Run, how: str) -> list[Measurement]:
    r = run.result
    user, system = run.cpu_seconds
    per_request_ms = 1000 * (user + system) / r.requests if r.requests else None
    system_share = f"{100 * system / (user + system):.0f}%" if user + system else "n/a"
    return [
        Measurement("hit throughput", run.contender, r.rps, "req/s", how),
        Measurement("hit latency p50", run.contender, r.latency_ms["p50"], "ms", how),
        Measurement("hit latency p99", run.contender, r.latency_ms["p99"], "ms", how),
        Measurement(
            "server CPU per hit",
            run.contender,
            per_request_ms,
            "ms",
            f"CPU time (user+sys, all server processes, /proc) in the measured run / requests;"
            f" {system_share} of it in the kernel",
        ),
        Measurement(
            "failed requests",
            run.contender,
            float(r.failed),
            "",
            "wrk: non-2xx + socket errors + timeouts in the measured run",
            Target("==", 0),
        ),
        Measurement(
            "upstream calls while measured",
            run.contender,
            float(run.upstream_calls),
            "",
            "generation calls the fake upstream received during warm-up + measured run",
            Target("==", 0),
        ),
    ]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def run_two_workers(ctx: Context) -> SectionResult:
    """The hit section again with 2 gateway workers beside 2 nginx workers."""
    two = dataclasses.replace(ctx, options=dataclasses.replace(ctx.options, workers=2))
    return run(two, name="hits-2-workers", png_target=1.2)


def run(ctx: Context, name: str = "hits", png_target: float = 1.0) -> SectionResult:
    o = ctx.options
    section = SectionResult(name, f"cache-hit throughput and latency, {o.workers} worker(s)")
    with running_fake(ok(noisy=True)) as fake:
        png, js = _gateway_runs(ctx, fake, section)
        nginx = _nginx_run(ctx, fake, section)
    how = (
        f"wrk -t{o.threads} -c{o.connections}, {o.duration:g} s after a {o.warmup:g} s warm-up, "
        f"same POST body; latency = send to last byte"
    )
    for r in (png, js, nginx):
        section.add(*_rows(r, how))
    ratio_how = "ratio of the two measured runs above"
    section.add(
        Measurement(
            "hit throughput ratio",
            "gateway PNG / nginx",
            _ratio(png.result.rps, nginx.result.rps),
            "x",
            ratio_how,
            Target(">=", png_target),
        ),
        Measurement(
            "hit throughput ratio",
            "gateway JSON / nginx",
            _ratio(js.result.rps, nginx.result.rps),
            "x",
            ratio_how,
        ),
        Measurement(
            "hit p99 ratio",
            "gateway PNG / nginx",
            _ratio(png.result.latency_ms["p99"], nginx.result.latency_ms["p99"]),
            "x",
            ratio_how,
            Target("<=", 1.5),
        ),
        Measurement(
            "hit p99 ratio",
            "gateway JSON / nginx",
            _ratio(js.result.latency_ms["p99"], nginx.result.latency_ms["p99"]),
            "x",
            ratio_how,
        ),
        Measurement(
            "JSON hits / PNG hits",
            "gateway",
            _ratio(js.result.rps, png.result.rps),
            "x",
            ratio_how,
            Target(">=", 0.8),
        ),
    )
    section.raw["runs"] = [r.to_json() for r in (png, js, nginx)]
    section.notes += [
        f"Payloads: gateway PNG {png.payload_bytes:,} B, gateway JSON {js.payload_bytes:,} B "
        f"(base64 of the PNG), nginx {nginx.payload_bytes:,} B. The fake draws a new noisy "
        "1344x768 PNG for every upstream call, so nginx cached a different image than the "
        "gateway, of the same size class (6-bit noise, incompressible).",
        "The gateway always asks the upstream for JSON and stores the decoded PNG; the client "
        "sends Accept: image/png to nginx, which forwards it, so nginx caches the raw PNG bytes "
        "the fake sent: both PNG contenders answer raw PNG from their cache.",
        f"Server processes: gateway --workers {o.workers}, nginx worker_processes {o.workers}; "
        f"wrk ({o.threads} threads) runs on the same {os.cpu_count()} cores as the server.",
        f"Gateway counters over both gateway runs (warm-ups included): "
        f"{section.raw.get('gateway_stats_delta')}",
    ]
    return section
