"""Image bytes in a diskcache folder, addressed by SHA-256.

diskcache writes a value of 32 KiB or more to a file of its own before the SQLite row that
points at it; if the write or the row fails (a full disk, a read-only folder), that file
would stay behind, unreferenced, for ever. `_TidyDisk` remembers the file each thread is
writing, so a failed `set` removes it. Eviction is the EntryStore's job (it knows which
entries are oldest, and keeps its totals right), so this cache never culls on its own.
"""

from __future__ import annotations

import contextlib
import enum
import os
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
import diskcache

from cache.local.errors import store_errors
from cache.local.nowait import NOWAIT, read_whole


class NotReady(enum.Enum):
    NOT_READY = "not ready"


NOT_READY = NotReady.NOT_READY
# NOWAIT: Linux 4.14+ (preadv2's RWF_NOWAIT); elsewhere every read takes the worker thread.


class _TidyDisk(diskcache.Disk):  # type: ignore[misc]
    """diskcache's Disk, able to remove the file it was writing when the write failed."""

    def __init__(self, directory: str, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self._writing = threading.local()

    def filename(self, key: Any = diskcache.UNKNOWN, value: Any = diskcache.UNKNOWN) -> Any:
        name, full_path = super().filename(key, value)
        self._writing.path = full_path
        return name, full_path

    def begin(self) -> None:
        self._writing.path = None

    def discard_unfinished(self) -> None:
        path = getattr(self._writing, "path", None)
        self._writing.path = None
        if path:
            with contextlib.suppress(OSError):
                os.remove(path)


class DiskBlobStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.where = str(directory)
        self._nowait = NOWAIT
        with store_errors(self.where):
            self.cache = diskcache.Cache(
                str(directory), disk=_TidyDisk, eviction_policy="none", size_limit=2**62
            )

    @property
    def _disk(self) -> _TidyDisk:
        disk = self.cache.disk
        assert isinstance(disk, _TidyDisk)
        return disk

    def put_sync(self, sha256: str, data: bytes) -> None:
        with store_errors(self.where):
            if sha256 in self.cache:
                return
            self._disk.begin()
            try:
                self.cache.set(sha256, data)
            except BaseException:
                self._disk.discard_unfinished()
                raise

    def get_sync(self, sha256: str) -> bytes | None:
        """One read into one buffer: diskcache hands back a file's whole content."""
        with store_errors(self.where):
            value = self.cache.get(sha256)
        return value if isinstance(value, bytes) else None

    def get_now(self, sha256: str) -> bytes | NotReady | None:
        """The blob if it can be had without waiting for the disk, else NOT_READY: a small
        blob is in SQLite's row; a file is read with RWF_NOWAIT, which reads only pages
        already in the page cache and fails instead of waiting for the device. A hit on a
        blob read recently (the common cold hit) then costs no thread hop; the caller
        falls back to `get_sync` in a worker thread otherwise. None: no such blob."""
        if self._nowait is None:
            return NOT_READY
        with store_errors(self.where):
            value = self.cache.get(sha256, read=True)
            if value is None or isinstance(value, bytes):
                return value
            with value as reader:
                fd = reader.fileno()
                try:
                    data = read_whole(fd, os.fstat(fd).st_size, self._nowait)
                except BlockingIOError:  # some of it is not in the page cache
                    return NOT_READY
                except OSError:  # EOPNOTSUPP, EINVAL: this file system cannot; stop trying
                    self._nowait = None
                    return NOT_READY
        return NOT_READY if data is None else data

    def open_now(self, sha256: str, size: int) -> Any:
        """The blob's own file, open, if it is one and holds `size` bytes; else None (a
        small blob kept in SQLite's row, a missing or truncated file). The caller closes it.
        Costs diskcache's row lookup and an open: no read."""
        with store_errors(self.where):
            value = self.cache.get(sha256, read=True)
            if value is None or isinstance(value, bytes):
                return None
            try:
                if os.fstat(value.fileno()).st_size == size:
                    return value
            except OSError:
                pass
            value.close()
            return None

    def has_sync(self, sha256: str) -> bool:
        with store_errors(self.where):
            return sha256 in self.cache

    def delete_sync(self, sha256: str) -> None:
        with store_errors(self.where):
            self.cache.delete(sha256)

    def clear_sync(self) -> None:
        with store_errors(self.where):
            self.cache.clear()

    def volume(self) -> int:
        with store_errors(self.where):
            return int(self.cache.volume())

    def files(self) -> list[Path]:
        """Every value file on disk (for tests and checks: orphans show up here)."""
        return [p for p in Path(self.where).rglob("*.val")]

    async def put(self, sha256: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self.put_sync, sha256, data)

    async def get(self, sha256: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self.get_sync, sha256)

    async def delete(self, sha256: str) -> None:
        await anyio.to_thread.run_sync(self.delete_sync, sha256)

    async def close(self) -> None:
        self.cache.close()
