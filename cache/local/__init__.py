"""The embedded default backend: everything in the cache folder, shared by the worker
processes of one host.

    <dir>/index.sqlite3   the entry index (SQLite, WAL): metadata, totals, prompt search
    <dir>/blobs/          image bytes by SHA-256 (diskcache: files of their own)
    <dir>/state/          coordination (diskcache, never evicted): rate-limit queue and
                          log, cool-down, leases, jobs, accepted credentials, counters
"""

from cache.local.blobs import DiskBlobStore
from cache.local.coordinator import LocalCoordinator
from cache.local.entries import LocalEntryStore

__all__ = ["DiskBlobStore", "LocalCoordinator", "LocalEntryStore"]
