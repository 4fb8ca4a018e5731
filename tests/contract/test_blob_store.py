"""The BlobStore contract: bytes by SHA-256, never overwritten."""

from __future__ import annotations

import hashlib

import pytest

from cache.interfaces import BlobStore

pytestmark = pytest.mark.anyio
BIG = bytes(range(256)) * 400  # 100 KiB: a file of its own on the local backend


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TestBlobStore:
    async def test_put_get_delete(self, blob_store: BlobStore) -> None:
        for data in (b"small", BIG):
            await blob_store.put(digest(data), data)
            assert await blob_store.get(digest(data)) == data
            await blob_store.delete(digest(data))
            assert await blob_store.get(digest(data)) is None

    async def test_a_digest_already_stored_is_not_written_again(
        self, blob_store: BlobStore
    ) -> None:
        await blob_store.put(digest(BIG), BIG)
        await blob_store.put(digest(BIG), b"anything else")  # same address: ignored
        assert await blob_store.get(digest(BIG)) == BIG

    async def test_unknown_digest_is_none(self, blob_store: BlobStore) -> None:
        assert await blob_store.get("0" * 64) is None
        await blob_store.delete("0" * 64)  # deleting what is not there is not an error
