"""End to end: two replicas (two gateway processes with cache folders of their own, as on
two hosts) sharing one real Redis, in front of one FakeStability.

Each test starts its gateways with a fresh key prefix on the session's redis-server
(tests/conftest.py), except the Redis-failure test, which starts a redis-server of its own
so it can stop and restart it. The S3 variant runs against moto's S3 in server mode on
loopback, the S3-protocol stand-in (no S3 server can be installed here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import S3_ENV
from tests.fakes.gateway_process import REPO_ROOT, GatewayProcess, gateway_env
from tests.fakes.redis_server import RedisServer
from tests.fakes.stability import FakeStability, count_max_in_window, hang, ok

KEY = "sk-test-SECRET-replicas-3f9a1c77e2b54d08"
ENGINE = "stable-diffusion-xl-1024-v1-0"
TEXT = f"/v1/generation/{ENGINE}/text-to-image"
FAST: dict[str, object] = {
    "retry_attempts": 3,
    "backoff_initial": 0.2,
    "backoff_max": 1,
    "backoff_jitter": 0,
    "cooldown": 0.1,
    "read_timeout": 30,
    "deadline": 30,
}

StartPair = Callable[..., tuple[GatewayProcess, GatewayProcess]]


def body(prompt: str, seed: int = 1) -> dict[str, Any]:
    return {"text_prompts": [{"text": prompt}], "seed": seed}


def post(gateway: GatewayProcess, payload: dict[str, Any], timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{gateway.url}{TEXT}", json=payload, timeout=timeout)


def post_split(
    gateways: Sequence[GatewayProcess], payloads: Sequence[dict[str, Any]]
) -> list[httpx.Response]:
    """All at once, request i to gateway i % len(gateways)."""

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=90, limits=limits) as client:
            return list(
                await asyncio.gather(
                    *(
                        client.post(f"{gateways[i % len(gateways)].url}{TEXT}", json=p)
                        for i, p in enumerate(payloads)
                    )
                )
            )

    return asyncio.run(run())


@pytest.fixture
def fake() -> Iterator[FakeStability]:
    with FakeStability() as server:
        yield server


@pytest.fixture
def prompt(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name} {uuid.uuid4().hex[:8]}"


@pytest.fixture
def start_pair(tmp_path: Path, redis_prefix: str) -> Iterator[StartPair]:
    """Two replicas on `redis_url` (each its own cache folder and log), settings as FAST
    overridden by keyword arguments (STABILITY_GATEWAY_<NAME>)."""
    started: list[GatewayProcess] = []

    def start(upstream_url: str, redis_url: str, **settings: object) -> tuple[GatewayProcess, ...]:
        pair = []
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir(exist_ok=True)
            env = gateway_env(
                folder / "cache", upstream_url, "online", KEY,
                **{"redis_url": redis_url, "redis_prefix": redis_prefix, **FAST, **settings},
            )  # fmt: skip
            env.update({k: v for k, v in S3_ENV.items()})
            process = GatewayProcess(env, log_dir=folder)
            started.append(process)
            pair.append(process.start())
        return tuple(pair)

    yield start  # type: ignore[misc]
    for process in started:
        process.stop()
    for process in started:
        assert KEY not in process.logs(), f"the upstream key leaked into {process.log_path}"


def stats(gateway: GatewayProcess) -> dict[str, Any]:
    response = httpx.get(f"{gateway.url}/cache/stats", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll `check` (counters are flushed every second by each replica)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def test_one_limit_across_replicas(
    fake: FakeStability, redis_server: RedisServer, start_pair: StartPair
) -> None:
    """Issue 11, test 1: 5 per 2 s, 20 distinct requests at once split across both
    replicas: no half-open window of the upstream's arrivals holds more than 5, all 20
    are answered."""
    a, b = start_pair(fake.url, redis_server.url, rate_limit=5, rate_period=2, rate_margin=0.3)
    responses = post_split([a, b], [body(f"limit {i}") for i in range(20)])
    assert [r.status_code for r in responses] == [200] * 20
    arrivals = [c.t for c in fake.generation_calls()]
    assert len(arrivals) == 20
    assert count_max_in_window(arrivals, 2.0) <= 5
    print(f"\nmost arrivals in a 2 s window: {count_max_in_window(arrivals, 2.0)}")


def test_one_call_for_identical_requests_across_replicas(
    fake: FakeStability, redis_server: RedisServer, start_pair: StartPair, prompt: str
) -> None:
    """Test 2: 40 identical requests at once, split across both: exactly 1 upstream call."""
    fake.default = ok(delay=1.0)
    a, b = start_pair(fake.url, redis_server.url)
    responses = post_split([a, b], [body(prompt)] * 40)
    assert [r.status_code for r in responses] == [200] * 40
    assert len(fake.generation_calls()) == 1
    images = {r.json()["artifacts"][0]["base64"] for r in responses}
    assert len(images) == 1


@pytest.mark.parametrize("hit_check", ["version", "invalidation"])
def test_a_miss_on_one_replica_is_a_hit_on_the_other(
    fake: FakeStability,
    redis_server: RedisServer,
    start_pair: StartPair,
    prompt: str,
    hit_check: str,
) -> None:
    """Test 3: a miss on replica A, then the same request on B: a HIT, no upstream call.
    Then the entry is deleted on A: B's memory copy is not served any more (either way of
    checking it), the next request on B is a miss."""
    a, b = start_pair(fake.url, redis_server.url, redis_hit_check=hit_check)
    first = post(a, body(prompt))
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    for _ in range(3):
        second = post(b, body(prompt))
        assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
        assert second.json() == first.json()
    assert len(fake.generation_calls()) == 1
    deleted = httpx.delete(f"{a.url}/cache/entries/{first.headers['x-cache-key']}")
    assert deleted.status_code == 200
    time.sleep(0.5)  # the invalidation message's trip, with room to spare
    third = post(b, body(prompt))
    assert third.status_code == 200 and third.headers["x-cache"] == "MISS"
    assert len(fake.generation_calls()) == 2
    health = httpx.get(f"{b.url}/healthz").json()
    assert (health["backend"], health["backend_reachable"], health["blobs"]) == (
        "redis",
        True,
        "redis",
    )


def test_version_checks_of_concurrent_hits_see_a_delete_made_before_them(
    fake: FakeStability, redis_server: RedisServer, start_pair: StartPair, prompt: str
) -> None:
    """hit_check = "version" under load (its reads share round trips,
    cache.redis.coalesced): 40 hits at once on B are all HITs of A's image; once A has
    deleted the entry, none of the next 40 at once on B is served from B's memory copy."""
    a, b = start_pair(fake.url, redis_server.url, redis_hit_check="version")
    first = post(a, body(prompt))
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=40)
        async with httpx.AsyncClient(base_url=b.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post(TEXT, json=body(prompt)) for _ in range(40)))

    hits = asyncio.run(burst())
    assert {(r.status_code, r.headers["x-cache"]) for r in hits} == {(200, "HIT")}
    assert all(r.json() == first.json() for r in hits)
    deleted = httpx.delete(f"{a.url}/cache/entries/{first.headers['x-cache-key']}")
    assert deleted.status_code == 200  # no wait: version mode needs no message
    fake.script(ok(delay=1.0))  # B's 40 all arrive while its one call is under way
    after = asyncio.run(burst())
    assert all(r.status_code == 200 and r.headers["x-cache"] != "HIT" for r in after)
    assert len(fake.generation_calls()) == 2  # one call for B's 40 (single-flight)


def test_a_miss_on_one_replica_is_a_hit_on_the_other_with_s3_blobs(
    fake: FakeStability,
    redis_server: RedisServer,
    start_pair: StartPair,
    prompt: str,
    s3_server: str,
    s3_bucket: str,
) -> None:
    """Test 3 with the images in S3 (moto's S3 server on loopback stands in for it)."""
    import boto3

    a, b = start_pair(
        fake.url, redis_server.url, blob_store=f"s3://{s3_bucket}/img", s3_endpoint_url=s3_server
    )
    first = post(a, body(prompt))
    assert first.status_code == 200 and first.headers["x-cache"] == "MISS"
    second = post(b, body(prompt))
    assert second.status_code == 200 and second.headers["x-cache"] == "HIT"
    assert second.json() == first.json()
    assert len(fake.generation_calls()) == 1
    objects = boto3.client("s3", endpoint_url=s3_server).list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"].split("/")[0] for o in objects["Contents"]] == ["img"]
    assert httpx.get(f"{b.url}/healthz").json()["blobs"] == "s3"


def test_a_killed_lease_holder_is_replaced_within_two_lease_periods(
    fake: FakeStability, redis_server: RedisServer, start_pair: StartPair, prompt: str
) -> None:
    """Test 4: replica A holds the key's lease while its upstream call hangs; A is killed
    (SIGKILL: no release). The same request on B is answered within two lease periods plus
    the upstream's own time, by a call of its own."""
    lease, upstream_time = 1.0, 0.2
    fake.script(hang(60))  # A's call: never answered in time
    fake.default = ok(delay=upstream_time)
    a, b = start_pair(fake.url, redis_server.url, lease_seconds=lease)
    holder = threading.Thread(target=lambda: _swallow(lambda: post(a, body(prompt))))
    holder.start()
    assert wait_for(lambda: len(fake.generation_calls()) == 1, 10), "A never called upstream"
    assert a.pid is not None
    os.kill(a.pid, signal.SIGKILL)
    started = time.monotonic()
    answer = post(b, body(prompt))
    elapsed = time.monotonic() - started
    holder.join(10)
    assert answer.status_code == 200 and answer.headers["x-cache"] == "MISS"
    assert len(fake.generation_calls()) == 2
    print(f"\nanswered by B {elapsed:.2f} s after A was killed (lease {lease:g} s)")
    # The bound the issue sets, with scheduling slack for a busy 2-core machine.
    assert elapsed < 2 * lease + upstream_time + 1.0


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # its gateway was killed under it
        call()


def test_redis_stopped_and_started_again(
    fake: FakeStability, start_pair: StartPair, tmp_path: Path, prompt: str
) -> None:
    """Test 5: while Redis is down, misses get a fast 503 coordination_unavailable in
    Stability's shape and no upstream call; a hit the memory tier holds is still served;
    once Redis is back, normal service without restarting either gateway."""
    if not RedisServer.available():
        pytest.skip("redis-server is not installed")
    with RedisServer(tmp_path / "own-redis") as redis:
        a, b = start_pair(fake.url, redis.url)
        cached = post(a, body(prompt))
        assert cached.status_code == 200
        # A answers before it stores: let the store finish (inspection waits for it).
        assert httpx.get(f"{a.url}/cache/stats", timeout=10).json()["entries"] == 1
        redis.stop()
        health = httpx.get(f"{a.url}/healthz").json()
        assert health["status"] == "degraded" and health["backend_reachable"] is False
        started = time.monotonic()
        refused = [post(g, body(f"{prompt} while down {i}")) for i, g in enumerate((a, b))]
        elapsed = time.monotonic() - started
        for response in refused:
            assert response.status_code == 503, response.text
            error = response.json()
            assert error["name"] == "coordination_unavailable"
            assert set(error) == {"id", "name", "message"}
        assert elapsed < 10, "the refusals were not fast"
        assert len(fake.generation_calls()) == 1
        held = post(a, body(prompt))  # in A's memory tier
        assert held.status_code == 200 and held.json() == cached.json()
        redis.start()  # same port, empty (no persistence)
        assert wait_for(lambda: httpx.get(f"{b.url}/healthz").json()["backend_reachable"])
        after = [post(g, body(f"{prompt} after {i}")) for i, g in enumerate((a, b))]
        assert [r.status_code for r in after] == [200, 200]
        assert [r.headers["x-cache"] for r in after] == ["MISS", "MISS"]
        again = post(b, body(f"{prompt} after 0"))  # stored by A after the restart
        assert again.headers["x-cache"] == "HIT"
        assert len(fake.generation_calls()) == 3
        assert "Traceback" not in a.logs() + b.logs()


def test_stats_count_both_replicas(
    fake: FakeStability,
    redis_server: RedisServer,
    start_pair: StartPair,
    prompt: str,
    redis_prefix: str,
) -> None:
    """Test 6: `cache stats` and /cache/stats on either replica count both replicas' hits
    and calls."""
    a, b = start_pair(fake.url, redis_server.url)
    assert post(a, body(prompt)).headers["x-cache"] == "MISS"
    assert post(b, body(prompt)).headers["x-cache"] == "HIT"
    assert post(b, body(prompt)).headers["x-cache"] == "HIT"
    assert post(a, body(prompt)).headers["x-cache"] == "HIT"

    def counted(numbers: dict[str, Any]) -> bool:
        return (numbers["hits"], numbers["misses"], numbers["upstream_calls"]) == (3, 1, 1)

    for gateway in (a, b):
        assert wait_for(lambda g=gateway: counted(stats(g))), stats(gateway)  # type: ignore[misc]
        assert stats(gateway)["entries"] == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    env["STABILITY_GATEWAY_REDIS_PREFIX"] = redis_prefix
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "cache", "stats", "--json",
         "--redis-url", redis_server.url],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    numbers = json.loads(done.stdout)
    assert counted(numbers) and numbers["entries"] == 1
