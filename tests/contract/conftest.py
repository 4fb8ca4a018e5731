"""One fixture per interface, parametrised over every backend: a new backend passes the
contract by adding its name to BACKENDS and a branch to each factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cache.interfaces import BlobStore, Coordinator, EntryStore
from cache.local import DiskBlobStore, LocalCoordinator, LocalEntryStore

BACKENDS = ["local"]

EntryStoreFactory = Callable[[], EntryStore]
CoordinatorFactory = Callable[..., Coordinator]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def open_entry_store(backend: str, tmp_path: Path) -> AsyncIterator[EntryStoreFactory]:
    """Opens a store on the same place each call: what two worker processes (or a
    restarted gateway) do."""
    opened: list[EntryStore] = []

    def factory(size_limit: int = 10 * 1024**3) -> EntryStore:
        store = LocalEntryStore(tmp_path / "cache", size_limit=size_limit)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def entry_store(open_entry_store: EntryStoreFactory) -> EntryStore:
    return open_entry_store()


@pytest.fixture
async def blob_store(backend: str, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = DiskBlobStore(tmp_path / "blobs")
    yield store
    await store.close()


@pytest.fixture
async def open_coordinator(backend: str, tmp_path: Path) -> AsyncIterator[CoordinatorFactory]:
    opened: list[Coordinator] = []

    def factory(**limits: float) -> Coordinator:
        settings = {"limit": 100, "period": 1.0, "max_wait": 30.0, **limits}
        coordinator = LocalCoordinator(
            tmp_path / "state",
            limit=int(settings.pop("limit")),
            period=settings.pop("period"),
            **settings,  # type: ignore[arg-type]
        )
        opened.append(coordinator)
        return coordinator

    yield factory
    for coordinator in opened:
        await coordinator.close()


@pytest.fixture
async def coordinator(open_coordinator: CoordinatorFactory) -> Coordinator:
    return open_coordinator()
