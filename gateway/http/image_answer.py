"""An answer that is the image itself (Accept: image/png, v2beta's image/*): its bytes, its
media type, and its finish reason and seed as headers, the same for v1 and v2beta.

From memory it is a plain Response. From the cache folder (`ImageFileAnswer`) it is sent
straight from the blob's file by the server, with ASGI's zero-copy send
(gateway.http.zerocopy), so the image is neither read into memory nor copied through
Python; under a server without the extension (or a test client) the file is read, once,
in a worker thread. The file was checked against its SHA-256 in this process and holds
the recorded length (cache.model.ImageFile); the answer closes it once sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cache.model import Artifact, ImageFile
from gateway.http import zerocopy


def image_headers(finish_reason: str, seed: int, headers: Mapping[str, str]) -> dict[str, str]:
    return {**headers, "finish-reason": finish_reason, "seed": str(seed)}


def image_answer(artifact: Artifact, headers: Mapping[str, str]) -> Response:
    return Response(
        artifact.data,
        media_type=artifact.media_type,
        headers=image_headers(artifact.finish_reason, artifact.seed, headers),
    )


class ImageFileAnswer(Response):
    def __init__(self, image: ImageFile, headers: Mapping[str, str]) -> None:
        info = image.info
        self.image = image
        super().__init__(
            None,
            media_type=info.media_type,
            headers={
                **image_headers(info.finish_reason, info.seed, headers),
                "content-length": str(info.bytes),
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
            )  # fmt: skip
            if scope["method"] == "HEAD":
                await send({"type": "http.response.body", "body": b""})
            elif zerocopy.offered(scope):
                await send(
                    {"type": zerocopy.EXTENSION, "file": self.image.file, "offset": 0,
                     "count": self.image.info.bytes, "more_body": False}
                )  # fmt: skip
            else:
                body = await anyio.to_thread.run_sync(self._read)
                await send({"type": "http.response.body", "body": body})
        finally:
            self.image.close()

    def _read(self) -> bytes:
        size = self.image.info.bytes
        data = os.pread(self.image.file.fileno(), size, 0)
        if len(data) != size:
            raise OSError(f"the image's file ended after {len(data)} of its {size} bytes")
        return data
