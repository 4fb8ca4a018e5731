"""Cache inspection over HTTP: what the cache holds, what it saved, each image.

When an admin token is configured every endpoint here requires `Authorization: Bearer
<token>`; without one they are open (the default for a developer's own machine).
"""

from __future__ import annotations

import hmac
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cache.store import DiskStore
from gateway.errors import BadRequest, GatewayError, NotFound, Unauthorized


def public_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata shown to people: everything stored except internal fields."""
    return {k: v for k, v in meta.items() if not k.startswith("_")}


class InspectionAPI:
    def __init__(self, store: DiskStore, admin_token: str) -> None:
        self.store = store
        self.admin_token = admin_token

    def routes(self) -> list[Route]:
        return [
            Route("/cache/stats", self.guard(self.stats), methods=["GET"]),
            Route("/cache/entries", self.guard(self.entries), methods=["GET"]),
            Route("/cache/entries/{key}", self.guard(self.entry), methods=["GET"]),
            Route("/cache/entries/{key}", self.guard(self.delete), methods=["DELETE"]),
            Route("/cache/entries/{key}/image", self.guard(self.image), methods=["GET"]),
        ]

    def guard(self, endpoint):  # type: ignore[no-untyped-def]
        async def guarded(request: Request) -> Response:
            try:
                self.authorize(request)
                return await endpoint(request)
            except GatewayError as exc:
                return exc.response()

        return guarded

    def authorize(self, request: Request) -> None:
        if not self.admin_token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.admin_token.encode()
        ):
            raise Unauthorized(
                "the cache inspection endpoints need Authorization: Bearer <admin token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def stats(self, request: Request) -> Response:
        return JSONResponse(await anyio.to_thread.run_sync(self.store.stats))

    async def entries(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 50, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, None)
        total, page = await anyio.to_thread.run_sync(self.store.list_meta, limit, offset)
        return JSONResponse(
            {
                "total": total,
                "limit": limit,
                "offset": offset,
                "entries": [public_meta(m) for m in page],
            }
        )

    async def _meta(self, key: str) -> dict[str, Any]:
        meta = await anyio.to_thread.run_sync(self.store.get_meta, key)
        if meta is None:
            raise NotFound(f"no cache entry with key {key!r}")
        return meta

    async def entry(self, request: Request) -> Response:
        return JSONResponse(public_meta(await self._meta(request.path_params["key"])))

    async def image(self, request: Request) -> Response:
        key = request.path_params["key"]
        entry = await anyio.to_thread.run_sync(self.store.get, key)
        if entry is None:
            raise NotFound(f"no cache entry with key {key!r}")
        index = _int_param(request, "index", 0, 0, len(entry.artifacts) - 1)
        artifact = entry.artifacts[index]
        return Response(artifact.data, media_type=artifact.media_type)

    async def delete(self, request: Request) -> Response:
        key = request.path_params["key"]
        if not await anyio.to_thread.run_sync(self.store.delete, key):
            raise NotFound(f"no cache entry with key {key!r}")
        return JSONResponse({"deleted": key})


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise BadRequest(f"{name} must be {bound}, got {value}")
    return value
