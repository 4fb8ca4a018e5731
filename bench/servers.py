"""Starting the gateway the way users run it (`stability-gateway serve` in a subprocess).

Reuses the test suite's GatewayProcess, so the gateway under test is started exactly as the
end-to-end tests start it: its own process, online mode, a fake key, the fake upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.fakes import GatewayProcess, gateway_env

FAKE_KEY = "sk-bench-not-a-real-key"


@dataclass(frozen=True)
class RateLimit:
    """Upstream calls per period (s), plus the margin the gateway adds to the period."""

    limit: int
    period: float
    margin: float | None = None  # None: the configured default (config.toml)


# For sections that are not about the limiter: 150 per 0.1 s is ten times more than any of
# them asks for, while the limiter's shared log keeps the 150 entries it holds in production,
# so every upstream call still costs the same SQLite transaction it costs for real.
UNTHROTTLED = RateLimit(limit=150, period=0.1, margin=0.0)
# The production default: the credits section replays a real script under it.
PRODUCTION = RateLimit(limit=150, period=60.0)


def start_gateway(
    work: Path,
    name: str,
    upstream_url: str,
    *,
    rate: RateLimit,
    workers: int = 1,
) -> GatewayProcess:
    """A running gateway with its cache and log under work/<name>/; the caller stops it."""
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict[str, object] = {
        "rate_limit": rate.limit,
        "rate_period": rate.period,
    }
    if rate.margin is not None:
        extra["rate_margin"] = rate.margin
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
