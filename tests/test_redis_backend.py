"""What only the Redis backend must get right (the contracts are in tests/contract/): it
fails closed, recovers by itself, keys stay under their prefix, the memory tier's two ways
of staying current, and the settings that choose it. Against the session's real
redis-server (tests/conftest.py); an unreachable Redis is a closed loopback port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cache.interfaces import CoordinationError, StoreError
from cache.memory import MemoryTier, TieredEntryStore
from cache.model import Artifact
from cache.redis import RedisBlobStore, RedisConnection, RedisCoordinator, RedisEntryStore
from cache.redis.connection import redact
from cache.redis.tier import InvalidatedTier
from gateway.backends import open_backends
from gateway.cli import main
from gateway.config import ConfigError, Settings, load_settings
from tests.fakes.gateway_process import free_port
from tests.fakes.images import png_bytes
from tests.fakes.redis_server import RedisServer
from tests.support.app import app_client

pytestmark = pytest.mark.anyio
T2I = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"


def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def image_answer(request: httpx.Request) -> httpx.Response:
    import base64

    data = base64.b64encode(png_bytes(1024, 1024)).decode()
    return httpx.Response(
        200, json={"artifacts": [{"base64": data, "seed": 1, "finishReason": "SUCCESS"}]}
    )


def redis_settings(settings: Settings, url: str, prefix: str, **redis: str) -> Settings:
    return settings.replace(redis={"url": url, "prefix": prefix, **redis})


async def test_without_redis_a_miss_is_503_coordination_unavailable_and_no_call(
    settings: Settings, redis_prefix: str
) -> None:
    """Fails closed: the lease and the limiter cannot be had, so nothing goes upstream."""
    calls: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return image_answer(request)

    async with app_client(redis_settings(settings, closed_url(), redis_prefix), upstream) as c:
        for path, v2 in ((T2I, False), ("/v2beta/stable-image/generate/core", True)):
            if v2:
                response = await c.post(path, files={"prompt": (None, "a fox")})
            else:
                response = await c.post(path, json={"text_prompts": [{"text": "a fox"}]})
            assert response.status_code == 503, response.text
            assert response.json()["name"] == "coordination_unavailable"
            assert set(response.json()) == ({"id", "name", "errors"} if v2 else
                                            {"id", "name", "message"})  # fmt: skip
        health = (await c.get("/healthz")).json()
        for path in ("/cache/stats", "/cache/entries"):
            inspected = await c.get(path)  # a 503 in Stability's shape, not a plain 500
            assert inspected.status_code == 503 and inspected.json()["name"] == "cache_unavailable"
    assert calls == []
    assert (health["status"], health["backend"], health["backend_reachable"]) == (
        "degraded", "redis", False,
    )  # fmt: skip


async def test_the_limiter_fails_closed_even_without_a_lease(
    settings: Settings, redis_prefix: str
) -> None:
    """A request that may not store takes no lease: the limiter alone must refuse."""
    calls: list[httpx.Request] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return image_answer(request)

    async with app_client(redis_settings(settings, closed_url(), redis_prefix), upstream) as c:
        response = await c.post(
            T2I, json={"text_prompts": [{"text": "a fox"}]}, headers={"Cache-Control": "no-store"}
        )
    assert response.status_code == 503 and response.json()["name"] == "coordination_unavailable"
    assert calls == []


async def test_a_full_local_folder_still_calls_without_a_lease(settings: Settings) -> None:
    """The local backend does not fail closed (its limiter falls back to a share)."""
    backends = open_backends(settings)
    assert backends.coordinator.fails_closed is False and backends.kind == "local"
    assert await backends.healthy()
    await backends.aclose()


async def test_every_key_is_under_the_prefix(
    settings: Settings, redis_server: RedisServer, redis_prefix: str
) -> None:
    async with app_client(
        redis_settings(settings, redis_server.url, redis_prefix), image_answer
    ) as c:
        assert (await c.post(T2I, json={"text_prompts": [{"text": "a fox"}]})).status_code == 200
        assert (await c.post(T2I, json={"text_prompts": [{"text": "a fox"}]})).status_code == 200
        await c.get("/cache/stats")
    client = RedisConnection(redis_server.url).client
    keys = [k.decode() for k in await client.keys("*")]
    await client.aclose()
    mine = [k for k in keys if k.startswith(redis_prefix)]
    assert {"e", "idx", "totals", "counts", "blob", "ratelimit"} <= {
        k[len(redis_prefix) :].split(":")[0] for k in mine
    }
    assert all(k.startswith(("test-", "stability-gateway:")) for k in keys)


async def test_recovers_when_redis_comes_back(tmp_path: Path, redis_prefix: str) -> None:
    """No state is stuck: the same objects work again once the server is back."""
    server = RedisServer(tmp_path / "redis").start()
    connection = RedisConnection(server.url, prefix=redis_prefix)
    coordinator = RedisCoordinator(connection, limit=10, period=1)
    store = RedisEntryStore(connection, RedisBlobStore(connection))
    try:
        await store.put("k", [Artifact(b"x", 1)], {})
        assert await coordinator.acquire_lease("l", "t", 30)
        server.stop()
        with pytest.raises(CoordinationError):
            await coordinator.limiter.acquire()
        with pytest.raises(CoordinationError):
            await coordinator.acquire_lease("l2", "t", 30)
        with pytest.raises(StoreError):
            await store.get("k")
        server.start()
        assert (await coordinator.limiter.acquire()).waited == pytest.approx(0, abs=1)
        assert await coordinator.acquire_lease("l2", "t", 30)
        assert await store.get("k") is None  # a fresh Redis: an empty index
        await store.put("k", [Artifact(b"y", 1)], {})
        assert (await store.totals()).entries == 1
    finally:
        await store.close()
        await coordinator.close()
        server.stop()


async def test_a_lease_waiter_hears_the_release_without_polling(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """wait_released returns on the release message, long before the lease would expire,
    and asks Redis a bounded number of times (not every 50 ms)."""
    a = RedisCoordinator(RedisConnection(redis_server.url, prefix=redis_prefix), limit=1, period=1)
    b = RedisCoordinator(RedisConnection(redis_server.url, prefix=redis_prefix), limit=1, period=1)
    asked = 0
    pttl = b.client.pttl

    async def counting_pttl(name: str) -> int:
        nonlocal asked
        asked += 1
        return int(await pttl(name))

    b.client.pttl = counting_pttl  # type: ignore[method-assign]
    try:
        assert await a.acquire_lease("k", "ta", 60)
        waiting = asyncio.ensure_future(b.wait_released("k", 30))
        await asyncio.sleep(1.0)
        assert not waiting.done()
        await a.release_lease("k", "ta")
        await asyncio.wait_for(waiting, 5)
        assert asked <= 3  # once before waiting, once after the message
    finally:
        await a.close()
        await b.close()


@pytest.mark.parametrize("lookup", ["get", "get_image"])
async def test_invalidation_tier_serves_from_memory_until_told_otherwise(
    redis_server: RedisServer, redis_prefix: str, lookup: str
) -> None:
    """hit_check = "invalidation": the second hit costs no round trip; a write on another
    replica drops the mark (its message), and the next hit reads the new version. The
    same for an image answer's lookup (a regression: it asked Redis on every hit)."""
    one = RedisConnection(redis_server.url, prefix=redis_prefix)
    other = RedisConnection(redis_server.url, prefix=redis_prefix)
    store = RedisEntryStore(one, RedisBlobStore(one))
    tier = InvalidatedTier(store, MemoryTier(10_000_000), one.listener)
    writer = RedisEntryStore(other, RedisBlobStore(other))
    asked = 0
    version = store.index.version

    async def counting_version(key: str) -> str | None:
        nonlocal asked
        asked += 1
        return await version(key)

    store.index.version = counting_version  # type: ignore[method-assign]
    get = getattr(tier, lookup)
    try:
        await writer.put("k", [Artifact(b"one", 1)], {})
        first = await get("k")
        assert first is not None and asked == 1
        for _ in range(5):
            held = await get("k")
            assert held is not None and held.artifacts[0].data == b"one"
        assert asked == 1
        await writer.put("k", [Artifact(b"two", 1)], {})
        for _ in range(50):  # the message's trip
            if "k" not in tier._current:
                break
            await asyncio.sleep(0.01)
        fresh = await get("k")
        assert fresh is not None and fresh.artifacts[0].data == b"two" and asked == 2
        await writer.delete("k")
        for _ in range(50):
            if "k" not in tier._current:
                break
            await asyncio.sleep(0.01)
        assert await get("k") is None
    finally:
        await tier.close()
        await writer.close()


async def test_invalidation_tier_takes_concurrent_reads_of_one_key(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Many requests for one key at once (the single-flight case): every read is its own
    (a regression: reads compared equal, and one's bookkeeping removed another's)."""
    connection = RedisConnection(redis_server.url, prefix=redis_prefix)
    store = RedisEntryStore(connection, RedisBlobStore(connection))
    tier = InvalidatedTier(store, MemoryTier(10_000_000), connection.listener)
    try:
        await store.put("k", [Artifact(b"one", 1)], {})
        got = await asyncio.gather(*(tier.get("k") for _ in range(50)))
        assert all(e is not None and e.artifacts[0].data == b"one" for e in got)
        assert tier._reading == {}
        missing = await asyncio.gather(*(tier.get("none") for _ in range(20)))
        assert missing == [None] * 20 and tier._reading == {}
    finally:
        await tier.close()


async def test_version_tier_asks_on_every_hit(redis_server: RedisServer, redis_prefix: str) -> None:
    connection = RedisConnection(redis_server.url, prefix=redis_prefix)
    store = RedisEntryStore(connection, RedisBlobStore(connection))
    tier = TieredEntryStore(store, MemoryTier(10_000_000))
    await tier.put("k", [Artifact(b"one", 1)], {})
    other = RedisConnection(redis_server.url, prefix=redis_prefix)
    writer = RedisEntryStore(other, RedisBlobStore(other))
    await writer.put("k", [Artifact(b"two", 1)], {})
    fresh = await tier.get("k")
    assert fresh is not None and fresh.artifacts[0].data == b"two"  # at once, no message
    await tier.close()
    await writer.close()


async def test_version_reads_that_overlap_go_as_one_round_trip(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Version mode under load: the hits that ask at once share one pipeline, each still
    answered with its own key's version, and a write made before a hit asks is what the
    hit sees."""
    connection = RedisConnection(redis_server.url, prefix=redis_prefix)
    store = RedisEntryStore(connection, RedisBlobStore(connection))
    other = RedisConnection(redis_server.url, prefix=redis_prefix)
    writer = RedisEntryStore(other, RedisBlobStore(other))
    try:
        metas = {k: await writer.put(k, [Artifact(k.encode(), 1)], {}) for k in ("a", "b")}
        keys = ["a", "b", "none"] * 20
        before = store.index._versions.round_trips
        got = await asyncio.gather(*(store.version(k) for k in keys))
        assert got == [metas["a"].version, metas["b"].version, None] * 20
        assert store.index._versions.round_trips - before == 2  # the first, then the rest
        replaced = await writer.put("a", [Artifact(b"a2", 1)], {})
        assert await asyncio.gather(store.version("a"), store.version("b")) == [
            replaced.version, metas["b"].version,
        ]  # fmt: skip
    finally:
        await store.close()
        await writer.close()


def test_settings_for_redis(tmp_path: Path) -> None:
    none = tmp_path / "none.toml"
    none.write_text("")
    env = {
        "STABILITY_GATEWAY_CONFIG": str(none),
        "STABILITY_GATEWAY_REDIS_URL": "redis://:s3cret@cache.internal:6380/2",
        "STABILITY_GATEWAY_REDIS_PASSWORD": "other-secret",
        "STABILITY_GATEWAY_REDIS_PREFIX": "team-a:",
        "STABILITY_GATEWAY_BLOB_STORE": "s3://bucket/images",
        "STABILITY_GATEWAY_S3_ENDPOINT_URL": "http://minio:9000",
    }
    s = load_settings(environ=env)
    assert (s.redis.prefix, s.cache.blob_store, s.cache.s3_endpoint_url) == (
        "team-a:", "s3://bucket/images", "http://minio:9000",
    )  # fmt: skip
    assert "s3cret" not in repr(s) and "other-secret" not in repr(s)
    assert redact(s.redis.url) == "redis://:***@cache.internal:6380/2"
    for bad in (
        {"STABILITY_GATEWAY_BLOB_STORE": "redis"},  # without a Redis URL
        {"STABILITY_GATEWAY_BLOB_STORE": "s3://bucket/x"},
        {"STABILITY_GATEWAY_BLOB_STORE": "ftp://x", "STABILITY_GATEWAY_REDIS_URL": "redis://h"},
        {"STABILITY_GATEWAY_BLOB_STORE": "s3:///x", "STABILITY_GATEWAY_REDIS_URL": "redis://h"},
        {"STABILITY_GATEWAY_REDIS_URL": "http://h"},
        {"STABILITY_GATEWAY_REDIS_URL": "redis://h", "STABILITY_GATEWAY_REDIS_PREFIX": ""},
        {"STABILITY_GATEWAY_REDIS_URL": "redis://h", "STABILITY_GATEWAY_REDIS_HIT_CHECK": "x"},
        {"STABILITY_GATEWAY_REDIS_URL": "redis://h", "STABILITY_GATEWAY_RATE_BACKEND": "memory"},
    ):
        with pytest.raises(ConfigError):
            load_settings(environ={"STABILITY_GATEWAY_CONFIG": str(none), **bad})


def test_cache_commands_say_when_redis_cannot_be_reached(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cache", "stats", "--redis-url", closed_url()]) == 2
    assert "cannot reach Redis" in capsys.readouterr().err


@pytest.fixture
async def shared_store(
    redis_server: RedisServer, redis_prefix: str
) -> AsyncIterator[RedisEntryStore]:
    connection = RedisConnection(redis_server.url, prefix=redis_prefix)
    store = RedisEntryStore(connection, RedisBlobStore(connection))
    yield store
    await store.close()


async def test_prompt_search_matches_glob_characters_literally(
    shared_store: RedisEntryStore,
) -> None:
    from cache.interfaces import EntryQuery

    for key, text in (("k1", "a [red] fox*"), ("k2", "a red fox"), ("k3", "100% ?")):
        await shared_store.put(key, [Artifact(key.encode(), 1)], {
            "engine": "e", "route": "r", "prompts": [{"text": text, "weight": 1}]})  # fmt: skip
    assert {m.key for m in (await shared_store.list(EntryQuery(prompt="[red]"))).entries} == {"k1"}
    assert (await shared_store.list(EntryQuery(prompt="fox*"))).total == 1
    assert (await shared_store.list(EntryQuery(prompt="% ?"))).total == 1
    assert (await shared_store.list(EntryQuery(prompt="k1"))).total == 0  # not the key
    assert (await shared_store.list(EntryQuery(prompt="red", engine="e", route="r"))).total == 2
    assert (await shared_store.list(EntryQuery(prompt="red", engine="x"))).total == 0
