"""Shared fixtures: settings on a temporary cache folder, and the anyio backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Online settings with fast retries and a generous limit, cache in tmp_path."""
    return Settings(api_key="sk-test-SECRET-key-123456").replace(
        gateway={"mode": "online", "upstream_url": "https://upstream.test"},
        cache={"dir": str(tmp_path / "cache")},
        retry={"backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.05, "jitter_seconds": 0},
        rate_limit={"cooldown_seconds": 0.05, "margin_seconds": 0},
    )
