"""Which storage and coordination backends a gateway runs on, built from its settings.

Today: the local backend (the cache folder, shared by the worker processes of one host).
The app factory takes a `Backends`, so tests and other backends plug in without touching
the pipeline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cache.interfaces import CoordinationError, Coordinator, StoreError
from cache.local import LocalCoordinator, LocalEntryStore
from cache.memory import MemoryTier, TieredEntryStore
from gateway.config import Settings


@dataclass
class Backends:
    entries: TieredEntryStore
    coordinator: Coordinator
    kind: str = "local"

    async def aclose(self) -> None:
        await self.entries.close()
        await self.coordinator.close()


class BackendError(Exception):
    """A backend cannot be opened: one line naming where, why, and the setting to change."""


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def open_backends(settings: Settings) -> Backends:
    """The backends `settings` ask for; BackendError when they cannot be opened."""
    folder = Path(settings.cache.dir)
    r = settings.rate_limit
    try:
        entries = LocalEntryStore(folder, size_limit=settings.cache.size_limit_bytes)
        coordinator = LocalCoordinator(
            folder / "state",
            limit=r.limit,
            period=r.period_seconds,
            margin=r.margin_seconds,
            max_wait=r.max_wait_seconds,
            backend=r.backend,
            workers=settings.gateway.workers,
        )
    except (StoreError, CoordinationError) as exc:
        why = "the folder is read-only" if _read_only(folder) else str(exc)
        raise BackendError(
            f"cannot use the cache folder {exc.where}: {why}; fix it, or choose another "
            "folder with STABILITY_GATEWAY_CACHE_DIR (or --cache-dir, or [cache] dir in "
            "config.toml)"
        ) from exc
    tiered = TieredEntryStore(entries, MemoryTier(settings.cache.memory_tier_bytes))
    return Backends(tiered, coordinator)
