"""Turning diskcache's and SQLite's failures into StoreError / CoordinationError."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator

import diskcache

from cache.interfaces import CoordinationError, StoreError

# OSError numbers that mean "this folder cannot take a write now" rather than a bug.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EIO}


def describe(exc: BaseException) -> str:
    """A short reason an operator recognises ("disk full", "read-only", ...)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return "the file system is read-only"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    text = str(exc) or type(exc).__name__
    if "disk is full" in text:
        return "no space left on the device (database or disk is full)"
    if "readonly" in text or "read-only" in text:
        return "the folder is read-only"
    if "malformed" in text or "not a database" in text:
        return f"a database file is corrupt ({text})"
    if isinstance(exc, diskcache.Timeout):
        return "the database stayed locked too long"
    return text


def is_storage_failure(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error | diskcache.Timeout):
        return True
    return isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS


@contextlib.contextmanager
def store_errors(where: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if is_storage_failure(exc):
            raise StoreError(describe(exc), where=where) from exc
        raise


@contextlib.contextmanager
def coordination_errors(where: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if is_storage_failure(exc):
            raise CoordinationError(describe(exc), where=where) from exc
        raise
