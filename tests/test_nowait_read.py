"""cache.local.nowait: a whole file read into one new bytes object, or a clear refusal."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from cache.local import nowait

pytestmark = pytest.mark.skipif(nowait.NOWAIT is None, reason="preadv2 RWF_NOWAIT is Linux's")
CONTENT = os.urandom(300_000)


@pytest.fixture
def fd(tmp_path: Path) -> Any:
    path = tmp_path / "blob"
    path.write_bytes(CONTENT)
    handle = os.open(path, os.O_RDONLY)
    yield handle
    os.close(handle)


@pytest.mark.parametrize("direct", [True, False])
def test_the_whole_file_comes_back_as_bytes(fd: int, direct: bool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    if not direct:
        monkeypatch.setattr(nowait, "_allocate", None)
    data = nowait.read_whole(fd, len(CONTENT), nowait.NOWAIT)  # type: ignore[arg-type]
    assert type(data) is bytes and data == CONTENT
    assert nowait.read_whole(fd, 10, 0) == CONTENT[:10]  # tiny: the bytearray way


def test_on_cpython_the_read_goes_straight_into_a_new_bytes_object(fd: int) -> None:
    assert nowait._allocate is not None  # CI runs CPython: the direct way is the one used
    first = nowait.read_whole(fd, len(CONTENT), 0)
    second = nowait.read_whole(fd, len(CONTENT), 0)
    assert first == second == CONTENT and first is not second
    assert hash(first) == hash(CONTENT)  # a well-formed bytes object, hashable as any


def test_a_short_read_gives_none_and_refusals_are_raised(fd: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert nowait.read_whole(fd, len(CONTENT) + 4096, 0) is None  # the file changed size

    def refuse(*args: Any) -> int:
        raise BlockingIOError(errno.EAGAIN, "would block")

    monkeypatch.setattr(os, "preadv", refuse)
    with pytest.raises(BlockingIOError):
        nowait.read_whole(fd, len(CONTENT), nowait.NOWAIT)  # type: ignore[arg-type]
