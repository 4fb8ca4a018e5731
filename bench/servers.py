"""Starting the gateway the way users run it (`stability-gateway serve` in a subprocess).

Reuses the test suite's GatewayProcess, so the gateway under test is started exactly as the
end-to-end tests start it: its own process, online mode, a fake key, the fake upstream.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fakes import GatewayProcess, gateway_env
from tests.fakes.gateway_process import free_port
from tests.fakes.redis_server import RedisServer

FAKE_KEY = "sk-bench-not-a-real-key"
CONTENTION = re.compile(r"rate limiter: (\d+) changes committed, (\d+) made again")


@dataclass(frozen=True)
class RateLimit:
    """Upstream calls per period (s), plus the margin the gateway adds to the period."""

    limit: int
    period: float
    margin: float | None = None  # None: the configured default (config.toml)


# For sections that are not about the limiter: 150 per 0.1 s is ten times more than any of
# them asks for, while the limiter's shared log keeps the 150 entries it holds in production,
# so every upstream call still costs the same SQLite transaction it costs for real. The
# margin is the default one (0.1 s): with none, every send would be counted from its write,
# one more transaction per miss (full run I, README "One shared rate limit").
UNTHROTTLED = RateLimit(limit=150, period=0.1)
# The production default: the credits section replays a real script under it.
PRODUCTION = RateLimit(limit=150, period=60.0)


def start_gateway(
    work: Path,
    name: str,
    upstream_url: str,
    *,
    rate: RateLimit,
    workers: int = 1,
    settings: Mapping[str, object] | None = None,
) -> GatewayProcess:
    """A running gateway with its cache and log under work/<name>/; the caller stops it.
    `settings`: more STABILITY_GATEWAY_<NAME> values (a Redis URL, say)."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict[str, object] = {
        "rate_limit": rate.limit,
        "rate_period": rate.period,
    }
    if rate.margin is not None:
        extra["rate_margin"] = rate.margin
    extra.update(settings or {})
    env = gateway_env(
        folder / "cache", upstream_url=upstream_url, mode="online", api_key=FAKE_KEY, **extra
    )
    args = ["--workers", str(workers)] if workers != 1 else []
    return GatewayProcess(env, extra_args=args, log_dir=folder).start(timeout=30)


def cache_stats(gateway: GatewayProcess) -> dict[str, Any]:
    """GET /cache/stats (hits, misses, upstream_calls...), flushed by the answering worker."""
    response = httpx.get(f"{gateway.url}/cache/stats", timeout=30)
    response.raise_for_status()
    return dict(response.json())


@contextlib.contextmanager
def running_redis(work: Path, name: str = "redis") -> Iterator[RedisServer]:
    """The test suite's RedisServer (no persistence, loopback, a free port) under work/."""
    with RedisServer(work / name) as server:
        yield server


def start_replicas(
    work: Path,
    name: str,
    upstream_url: str,
    redis_url: str,
    *,
    rate: RateLimit,
    count: int = 2,
    hit_check: str = "version",
) -> list[GatewayProcess]:
    """`count` gateways, each its own cache folder (as on separate hosts), sharing one Redis
    under a key prefix of their own; the caller stops them."""
    prefix = f"bench-{name}-{uuid.uuid4().hex[:8]}:"
    shared = {"redis_url": redis_url, "redis_prefix": prefix, "redis_hit_check": hit_check}
    started: list[GatewayProcess] = []
    try:
        for i in range(count):
            started.append(
                start_gateway(work, f"{name}-{i}", upstream_url, rate=rate, settings=shared)
            )
    except BaseException:
        for gateway in started:
            gateway.stop()
        raise
    return started


def contention(gateways: list[GatewayProcess]) -> tuple[int, int]:
    """(changes committed, retries after a conflict) of the Redis limiter, summed over the
    gateways' logs (each logs its own at shutdown: call after stopping them)."""
    committed = retried = 0
    for gateway in gateways:
        for match in CONTENTION.finditer(gateway.logs()):
            committed += int(match.group(1))
            retried += int(match.group(2))
    return committed, retried


LATE_SEND = re.compile(r"a request went upstream (\d+) ms after its send slot was granted")


def late_sends(gateways: list[GatewayProcess]) -> list[int]:
    """How late (ms after the grant) each send the limiter counted from its write was, from
    the gateways' logs."""
    return [int(m.group(1)) for g in gateways for m in LATE_SEND.finditer(g.logs())]


@contextlib.contextmanager
def running_module(module: str, *args: str, probe: str = "/") -> Iterator[tuple[int, int]]:
    """`python -m <module> --serve PORT *args` (a bench helper server) on a free loopback
    port, once GET <probe> gets any HTTP answer; yields (port, pid) and stops it after."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--serve", str(port), *args],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield port, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
