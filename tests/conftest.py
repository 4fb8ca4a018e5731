"""Shared fixtures: settings on a temporary cache folder, the anyio backend, the fake
Stability (one per module, reset for each test), a Redis server and an S3 stand-in."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Settings
from tests.fakes import FakeStability
from tests.fakes.gateway_process import free_port
from tests.fakes.redis_server import RedisServer


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


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeStability]:
    """One fake Stability on loopback per test module (module-scoped gateways use it)."""
    with FakeStability() as fake:
        yield fake


@pytest.fixture
def fake(shared_fake: FakeStability) -> FakeStability:
    """The module's fake, reset: no calls, no scripted behaviour left from another test.
    Modules that need a fake of their own define `fake` themselves."""
    shared_fake.reset()
    return shared_fake


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session, on a free loopback port (tests use a fresh key
    prefix each, so they never see each other's keys). Skipped where redis-server is not
    installed, except under CI (CI=true), where that is a failure."""
    if not RedisServer.available():
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 in server mode on a free loopback port, as the S3-protocol stand-in (no
    S3 server can be installed here): its endpoint URL. Credentials are moto's dummies."""
    moto_server = pytest.importorskip("moto.server")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server; its name."""
    boto3 = pytest.importorskip("boto3")
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    return bucket
