"""Image bytes in Redis, addressed by SHA-256: `<prefix>blob:<sha256>`.

Works with nothing but Redis (the default blob store with Redis). A put of a digest already
present writes nothing (SET NX); the entry store deletes a digest once no entry refers to
it. Images take Redis memory: `[cache] size_limit_bytes` bounds them (the entry store evicts
the oldest entries beyond it), and should fit the Redis server's maxmemory.
"""

from __future__ import annotations

from cache.redis.connection import RedisConnection


class RedisBlobStore:
    kind = "redis"

    def __init__(self, connection: RedisConnection) -> None:
        self.connection = connection.share()
        self.client = connection.client
        self.where = connection.where

    def _key(self, sha256: str) -> str:
        return self.connection.key("blob", sha256)

    async def put(self, sha256: str, data: bytes) -> None:
        with self.connection.store_errors():
            await self.client.set(self._key(sha256), data, nx=True)

    async def get(self, sha256: str) -> bytes | None:
        with self.connection.store_errors():
            value = await self.client.get(self._key(sha256))
        return value if isinstance(value, bytes) else None

    async def delete(self, sha256: str) -> None:
        with self.connection.store_errors():
            await self.client.delete(self._key(sha256))

    async def close(self) -> None:
        await self.connection.close()
