"""The real app in process, in front of a fake upstream transport (no sockets).

`app_client` runs the app's lifespan too (httpx's ASGITransport does not), so start-up and
shut-down code, and the closing of the backends, are exercised as in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import Settings

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, upstream: Handler | None = None
) -> AsyncIterator[Starlette]:
    transport = httpx.MockTransport(upstream) if upstream is not None else None  # type: ignore[arg-type]
    app = create_app(settings, transport=transport)
    async with app.router.lifespan_context(app):
        yield app


@contextlib.asynccontextmanager
async def app_client(
    settings: Settings,
    upstream: Handler | None = None,
    *,
    raise_app_exceptions: bool = True,
    base_url: str = "http://gw",
) -> AsyncIterator[httpx.AsyncClient]:
    """With `raise_app_exceptions` False, an unhandled error is the 500 a client would see.
    `base_url` sets the Host header (the gallery, open without a token, wants a loopback one)."""
    async with running_app(settings, upstream) as app:
        transport = httpx.ASGITransport(app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def ask(
    settings: Settings, upstream: Handler, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """One request to a fresh app (its own cache folder) in front of `upstream`."""
    async with app_client(settings, upstream) as client:
        return await client.request(method, path, **kwargs)
