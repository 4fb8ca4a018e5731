"""The shared backend: every replica's coordination and entry index in one Redis, image
bytes in Redis or any S3-compatible store.

    connection.py   the client, the key prefix, redis-py errors -> StoreError/CoordinationError
    listener.py     one pub/sub subscription per process (lease releases, entry changes)
    coordinator.py  leases, records, counters, capped counters, the ledger (ledger.py)
    ratelimit.py    the fair queue of cache.fair_queue, on Redis's clock
    index.py        the entry index (hashes, sorted sets, totals; scripts.py: its Lua)
    entries.py      RedisEntryStore: index + a BlobStore
    blobs.py        RedisBlobStore
    s3.py           S3BlobStore (boto3, the [s3] extra)
    tier.py         the memory tier kept current by invalidation messages

Every key starts with the prefix (STABILITY_GATEWAY_REDIS_PREFIX, default
"stability-gateway:"), so several gateways can share one Redis.
"""

from cache.redis.blobs import RedisBlobStore
from cache.redis.connection import DEFAULT_PREFIX, RedisConnection, redact
from cache.redis.coordinator import RedisCoordinator
from cache.redis.entries import RedisEntryStore

__all__ = [
    "DEFAULT_PREFIX",
    "RedisBlobStore",
    "RedisConnection",
    "RedisCoordinator",
    "RedisEntryStore",
    "redact",
]
