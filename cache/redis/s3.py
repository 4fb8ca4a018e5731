"""Image bytes in any S3-compatible store (AWS S3, MinIO, R2...), addressed by SHA-256.

    s3://bucket/prefix  ->  objects <prefix>/<sha256[:2]>/<sha256>

boto3 (the `[s3]` extra: `pip install -e ".[s3]"`) in worker threads: its client is
thread-safe, and an image is one PUT or one GET, so a thread hop per call costs little
beside the transfer. The endpoint comes from STABILITY_GATEWAY_S3_ENDPOINT_URL (empty:
AWS), credentials and region from the standard AWS variables and files. A put first asks
whether the object exists (HEAD), so a digest already stored is never written again.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread

from cache.interfaces import StoreError

MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def parse_s3_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; ValueError when it is not one."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    return parts.netloc, parts.path.strip("/")


class S3BlobStore:
    kind = "s3"

    def __init__(self, url: str, *, endpoint_url: str = "", client: Any = None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.where = f"s3://{self.bucket}/{self.prefix}" + (
            f" at {endpoint_url}" if endpoint_url else ""
        )
        if client is None:
            try:
                import boto3  # type: ignore[import-untyped]
                from botocore.config import Config  # type: ignore[import-untyped]
            except ImportError as exc:
                raise StoreError(
                    "s3:// blobs need boto3: pip install 'stability-gateway[s3]'",
                    where=self.where,
                ) from exc
            client = boto3.client(
                "s3",
                endpoint_url=endpoint_url or None,
                config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
            )
        self.client = client

    def _name(self, sha256: str) -> str:
        name = f"{sha256[:2]}/{sha256}"
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            if _missing(exc):
                raise KeyError(kwargs.get("Key")) from exc
            raise StoreError(f"{method} failed: {exc}", where=self.where) from exc

    def _put(self, sha256: str, data: bytes) -> None:
        try:
            self._call("head_object", Key=self._name(sha256))
        except KeyError:
            self._call("put_object", Key=self._name(sha256), Body=data)

    def _get(self, sha256: str) -> bytes | None:
        try:
            answer = self._call("get_object", Key=self._name(sha256))
        except KeyError:
            return None
        body = answer["Body"]
        try:
            data: bytes = body.read()
        except Exception as exc:
            raise StoreError(f"reading an object failed: {exc}", where=self.where) from exc
        finally:
            body.close()
        return data

    def _delete(self, sha256: str) -> None:
        with contextlib.suppress(KeyError):
            self._call("delete_object", Key=self._name(sha256))

    def ping(self) -> bool:
        try:
            self._call("head_bucket")
        except (KeyError, StoreError):
            return False
        return True

    async def put(self, sha256: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._put, sha256, data)

    async def get(self, sha256: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._get, sha256)

    async def delete(self, sha256: str) -> None:
        await anyio.to_thread.run_sync(self._delete, sha256)

    async def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in MISSING_CODES
