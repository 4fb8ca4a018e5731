"""One fixture per interface, parametrised over every backend: a new backend passes the
contract by adding its name to BACKENDS and a branch to each factory.

The Redis backend runs against the session's own redis-server (tests/conftest.py), each
test under a fresh key prefix; S3 blobs against moto's S3 server on loopback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cache.interfaces import BlobStore, Coordinator, EntryStore
from cache.local import DiskBlobStore, LocalCoordinator, LocalEntryStore
from cache.redis import RedisBlobStore, RedisConnection, RedisCoordinator, RedisEntryStore
from tests.fakes.redis_server import RedisServer

BACKENDS = ["local", "redis"]
BLOB_BACKENDS = ["local", "redis", "s3"]

EntryStoreFactory = Callable[[], EntryStore]
CoordinatorFactory = Callable[..., Coordinator]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def redis_for(backend: str, request: pytest.FixtureRequest) -> Callable[[], RedisConnection]:
    """Opens a new connection (what another process would hold) on this test's prefix."""
    if backend != "redis":
        return lambda: pytest.fail("not a Redis test")
    server: RedisServer = request.getfixturevalue("redis_server")
    prefix: str = request.getfixturevalue("redis_prefix")
    return lambda: RedisConnection(server.url, prefix=prefix)


@pytest.fixture
async def open_entry_store(
    backend: str, tmp_path: Path, redis_for: Callable[[], RedisConnection]
) -> AsyncIterator[EntryStoreFactory]:
    """Opens a store on the same place each call: what two worker processes (or a
    restarted gateway) do."""
    opened: list[EntryStore] = []

    def factory(size_limit: int = 10 * 1024**3) -> EntryStore:
        store: EntryStore
        if backend == "redis":
            connection = redis_for()
            store = RedisEntryStore(connection, RedisBlobStore(connection), size_limit=size_limit)
        else:
            store = LocalEntryStore(tmp_path / "cache", size_limit=size_limit)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def entry_store(open_entry_store: EntryStoreFactory) -> EntryStore:
    return open_entry_store()


@pytest.fixture(params=BLOB_BACKENDS)
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store: BlobStore
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix: str = request.getfixturevalue("redis_prefix")
        store = RedisBlobStore(RedisConnection(server.url, prefix=prefix))
    elif request.param == "s3":
        from cache.redis.s3 import S3BlobStore

        endpoint: str = request.getfixturevalue("s3_server")
        bucket: str = request.getfixturevalue("s3_bucket")
        store = S3BlobStore(f"s3://{bucket}/images", endpoint_url=endpoint)
    else:
        store = DiskBlobStore(tmp_path / "blobs")
    yield store
    await store.close()


@pytest.fixture
async def open_coordinator(
    backend: str, tmp_path: Path, redis_for: Callable[[], RedisConnection]
) -> AsyncIterator[CoordinatorFactory]:
    opened: list[Coordinator] = []

    def factory(**limits: float) -> Coordinator:
        settings = {"limit": 100, "period": 1.0, "max_wait": 30.0, **limits}
        limit, period = int(settings.pop("limit")), settings.pop("period")
        coordinator: Coordinator
        if backend == "redis":
            coordinator = RedisCoordinator(redis_for(), limit=limit, period=period, **settings)
        else:
            coordinator = LocalCoordinator(
                tmp_path / "state", limit=limit, period=period, **settings
            )
        opened.append(coordinator)
        return coordinator

    yield factory
    for coordinator in opened:
        await coordinator.close()


@pytest.fixture
async def coordinator(open_coordinator: CoordinatorFactory) -> Coordinator:
    return open_coordinator()
