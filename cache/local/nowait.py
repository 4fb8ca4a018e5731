"""A whole file read into one new `bytes`, only if none of it must wait for the device.

`os.preadv(fd, [buffer], 0, os.RWF_NOWAIT)` reads pages already in the page cache and
refuses (BlockingIOError) instead of waiting for the disk, which is what lets a cold hit
read its blob on the event loop. But it reads into a writable buffer, and the rest of the
gateway holds images as `bytes`: a `bytearray` (zeroed when allocated) and then
`bytes(buffer)` (a second copy) were 22 % of a cold hit's samples (`python -m
bench.hitprofile --cold 108`), as much as sending the image.

So on CPython the read goes straight into a new bytes object's own storage: CPython's
`PyBytes_FromStringAndSize(NULL, n)` makes a bytes object whose contents are left to the
caller to fill (the C API's documented way to build one), and a ctypes array over that
storage is the writable buffer `os.preadv` fills. Nothing else can see the object before
the read has filled it whole; on a short or refused read it is dropped. Elsewhere (another
Python, no ctypes), or for tiny files, the bytearray way is used.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Callable

NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)  # Linux 4.14+
# Below this the bytearray way costs nothing worth saving (and sizes 0 and 1 are CPython's
# shared singletons when built from data: never filled in place).
MIN_DIRECT = 4096


def _direct_allocator() -> Callable[[int], tuple[bytes, ctypes.Array[ctypes.c_char]]] | None:
    if sys.implementation.name != "cpython" or not hasattr(ctypes, "pythonapi"):
        return None
    try:
        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        new.restype, new.argtypes = ctypes.py_object, (ctypes.c_void_p, ctypes.c_ssize_t)
        storage = ctypes.pythonapi.PyBytes_AsString
        storage.restype, storage.argtypes = ctypes.c_void_p, (ctypes.py_object,)
    except AttributeError:
        return None

    def allocate(size: int) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
        data: bytes = new(None, size)
        return data, (ctypes.c_char * size).from_address(storage(data))

    return allocate


_allocate = _direct_allocator()


def read_whole(fd: int, size: int, flags: int) -> bytes | None:
    """The file's first `size` bytes (its whole content) read with `flags`, or None when
    fewer came. Raises what `os.preadv` raises (BlockingIOError: some page is not in the
    page cache; OSError: this file system cannot do it)."""
    if _allocate is None or size < MIN_DIRECT:
        buffer = bytearray(size)
        read = os.preadv(fd, [buffer], 0, flags)
        return bytes(buffer) if read == size else None
    data, window = _allocate(size)
    read = os.preadv(fd, [window], 0, flags)
    return data if read == size else None
