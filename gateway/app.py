"""The app factory: `create_app(settings, transport=None)` builds the whole gateway.

Tests build the real app with a fake upstream by passing an httpx transport; the server
builds it from the environment with `app_from_environment` (a uvicorn factory, so each
worker process builds its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cache.store import DiskStore
from gateway.config import Settings, load_settings
from gateway.errors import GatewayError, NotFound, PayloadTooLarge
from gateway.generation import RouteSpec
from gateway.inspect_api import InspectionAPI
from gateway.logs import configure_logging
from gateway.pipeline import Pipeline
from gateway.ratelimit import DiskRateLimiter, MemoryRateLimiter, RateLimiter
from gateway.routes.image_to_image import ImageToImage
from gateway.routes.passthrough import AccountPassThrough, Results
from gateway.routes.stable_image import V2_ROUTES, StableImage
from gateway.routes.text_to_image import TextToImage
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway")

STATS_FLUSH_SECONDS = 1.0


def is_v2(path: str) -> bool:
    """v2beta paths answer errors in v2beta's shape, `{"id","name","errors"}`."""
    return path.startswith("/v2beta/")


class BodySizeLimit:
    """Pure ASGI middleware: refuse bodies over `max_bytes` before they are buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await too_large.response(v2=is_v2(scope["path"]))(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise too_large
            return message

        await self.app(scope, limited, send)


def build_limiter(settings: Settings, store: DiskStore) -> RateLimiter:
    r = settings.rate_limit
    if r.backend == "memory":
        return MemoryRateLimiter(
            limit=r.limit,
            period=r.period_seconds,
            margin=r.margin_seconds,
            max_wait=r.max_wait_seconds,
        )
    return DiskRateLimiter(
        store.state,
        limit=r.limit,
        period=r.period_seconds,
        margin=r.margin_seconds,
        max_wait=r.max_wait_seconds,
    )


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    store: DiskStore | None = None,
) -> Starlette:
    store = store or DiskStore(
        settings.cache.dir,
        size_limit=settings.cache.size_limit_bytes,
        memory_bytes=settings.cache.memory_tier_bytes,
    )
    upstream = None
    if settings.mode == "online":
        upstream = UpstreamClient(
            settings,
            build_limiter(settings, store),
            transport=transport,
            on_attempt=lambda: store.count("upstream_calls"),
        )
    pipeline = Pipeline(settings, store, upstream)

    def generation_route(path: str, spec: RouteSpec) -> Route:
        async def endpoint(request: Request) -> Response:
            return await pipeline.handle(request, spec)

        return Route(path, endpoint, methods=["POST"])

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "mode": settings.mode})

    async def not_found(request: Request, exc: Exception) -> Response:
        v2 = is_v2(request.url.path)
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return GatewayError(
                f"{request.method} is not allowed on {request.url.path}",
                name="method_not_allowed",
                status=405,
            ).response(v2=v2, headers=exc.headers)  # Allow, which RFC 9110 requires
        return NotFound(f"no such route: {request.method} {request.url.path}").response(v2=v2)

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return exc.response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        log.info(
            "stability-gateway starting: mode=%s upstream=%s cache=%s rate=%d/%gs (%s)",
            settings.mode,
            settings.gateway.upstream_url if settings.mode == "online" else "-",
            settings.cache.dir,
            settings.rate_limit.limit,
            settings.rate_limit.period_seconds,
            settings.rate_limit.backend,
        )
        if settings.mode == "online" and not settings.api_key:
            log.info("no STABILITY_API_KEY: callers' own Authorization is forwarded upstream")

        async def flush_forever() -> None:
            while True:
                await asyncio.sleep(STATS_FLUSH_SECONDS)
                await anyio.to_thread.run_sync(store.flush)

        flusher = asyncio.create_task(flush_forever())
        try:
            yield
        finally:
            flusher.cancel()
            if upstream is not None:
                await upstream.aclose()
            await anyio.to_thread.run_sync(store.close)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        generation_route(
            "/v1/generation/{engine_id}/text-to-image", TextToImage(settings.defaults)
        ),
        *(
            generation_route(f"/v1/generation/{{engine_id}}/{spec.suffix}", spec)
            for spec in (
                ImageToImage("image-to-image"),
                ImageToImage("masking"),
                ImageToImage("upscale"),
            )
        ),
        *(generation_route(route.path, StableImage(route)) for route in V2_ROUTES),
        *AccountPassThrough(settings, upstream).routes(),
        *Results(settings, store, upstream).routes(),
        *InspectionAPI(store, settings.admin.token).routes(),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={404: not_found, 405: not_found, GatewayError: gateway_error},
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway.max_body_bytes)
    app.state.settings = settings
    app.state.store = store
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory: settings from $STABILITY_GATEWAY_CONFIG / ./config.toml / env."""
    settings = load_settings()
    configure_logging(settings.gateway.log_level, [settings.api_key, settings.admin.token])
    return create_app(settings)
