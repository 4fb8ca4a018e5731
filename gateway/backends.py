"""Which storage and coordination backends a gateway runs on, built from its settings.

    local  (no Redis URL)  the cache folder, shared by the worker processes of one host
    redis  (STABILITY_GATEWAY_REDIS_URL)  the entry index and all coordination in Redis,
           shared by every replica; image bytes in Redis, S3 or the folder
           (STABILITY_GATEWAY_BLOB_STORE); each replica keeps its own memory tier

The app factory takes a `Backends`, so tests and other backends plug in without touching
the pipeline. Opening connects to nothing: a gateway whose Redis is away still starts,
answers what its memory holds, says so at /healthz, and recovers by itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cache.interfaces import BlobStore, CoordinationError, Coordinator, StoreError
from cache.local import DiskBlobStore, LocalCoordinator, LocalEntryStore
from cache.memory import MemoryTier, TieredEntryStore
from gateway.config import Settings

log = logging.getLogger("gateway")


async def _always() -> bool:
    return True


@dataclass
class Backends:
    entries: TieredEntryStore
    coordinator: Coordinator
    kind: str = "local"
    blobs: str = "disk"  # where image bytes live: disk | redis | s3
    where: str = ""  # the folder or the Redis URL (password redacted)
    probe: Callable[[], Awaitable[bool]] = _always

    async def healthy(self) -> bool:
        """Whether the shared backend answers now (always True for the local folder)."""
        return await self.probe()

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
    if settings.redis.url:
        return _open_redis(settings)
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
    return Backends(tiered, coordinator, where=str(folder))


def _open_redis(settings: Settings) -> Backends:
    from cache.redis import RedisBlobStore, RedisConnection, RedisCoordinator, RedisEntryStore
    from cache.redis.tier import InvalidatedTier

    s, r = settings.redis, settings.rate_limit
    connection = RedisConnection(s.url, password=s.password, prefix=s.prefix)
    blob_store = settings.cache.blob_store or "redis"
    blobs: BlobStore
    try:
        if blob_store.startswith("s3://"):
            from cache.redis.s3 import S3BlobStore

            blobs = S3BlobStore(blob_store, endpoint_url=settings.cache.s3_endpoint_url)
            kind = "s3"
        elif blob_store == "disk":
            log.warning(
                "image bytes in the cache folder %s while the index is in Redis: right only "
                "if every replica shares that folder (else use STABILITY_GATEWAY_BLOB_STORE="
                "redis or s3://...)",
                settings.cache.dir,
            )
            blobs = DiskBlobStore(Path(settings.cache.dir) / "blobs")
            kind = "disk"
        else:
            blobs = RedisBlobStore(connection)
            kind = "redis"
    except StoreError as exc:
        raise BackendError(
            f"cannot use the blob store {exc.where}: {exc}; fix it, or choose another with "
            "STABILITY_GATEWAY_BLOB_STORE"
        ) from exc
    entries = RedisEntryStore(connection, blobs, size_limit=settings.cache.size_limit_bytes)
    coordinator = RedisCoordinator(
        connection,
        limit=r.limit,
        period=r.period_seconds,
        margin=r.margin_seconds,
        max_wait=r.max_wait_seconds,
    )
    tier = MemoryTier(settings.cache.memory_tier_bytes)
    tiered = (
        InvalidatedTier(entries, tier, connection.listener)
        if s.hit_check == "invalidation"
        else TieredEntryStore(entries, tier)
    )
    return Backends(
        tiered, coordinator, kind="redis", blobs=kind, where=connection.where,
        probe=connection.ping,
    )  # fmt: skip
