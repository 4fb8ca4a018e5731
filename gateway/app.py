"""The app factory: `create_app(settings, transport=None, backends=None)` builds the gateway.

Tests build the real app with a fake upstream by passing an httpx transport (and, if they
like, their own backends); the server builds it from the environment with
`app_from_environment` (a uvicorn factory, so each worker process builds its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cache.interfaces import LedgerRecord
from cache.model import EntryMeta
from gateway.backends import Backends, open_backends
from gateway.callers import CallerGate
from gateway.config import Settings, load_settings
from gateway.counters import Counters
from gateway.credits import Attempt, Budget, price_of
from gateway.errors import GatewayError, NotFound
from gateway.fetch import Fetcher
from gateway.generation import RouteSpec, UpstreamRequest
from gateway.http.access import AccessLog
from gateway.http.forward import is_v2
from gateway.http.limits import BodySizeLimit
from gateway.inspect_api import InspectionAPI, is_loopback
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.pipeline import Pipeline
from gateway.routes.forwarded import Forwarded
from gateway.routes.image_to_image import ImageToImage
from gateway.routes.passthrough import AccountPassThrough, Results
from gateway.routes.stable_image import V2_ROUTES, StableImage
from gateway.routes.text_to_image import TextToImage
from gateway.upstream import UpstreamClient
from gateway.web import gallery_routes

log = logging.getLogger("gateway")

SETTLE_SECONDS = 5.0  # the most an inspection request waits for stores still under way
SHUTDOWN_SETTLE_SECONDS = 30.0


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    backends: Backends | None = None,
) -> Starlette:
    owns_backends = backends is None
    backends = backends or open_backends(settings)
    entries, coordinator = backends.entries, backends.coordinator
    counters = Counters(coordinator, entries)
    metrics = Metrics()
    upstream = None
    fetcher = None

    def free_call(request: UpstreamRequest, tries: Sequence[Attempt]) -> None:
        for attempt in tries:
            counters.charged(LedgerRecord(time.time(), "call", request.route, "", "",
                                          attempt.status or 0, 0, 0.0))  # fmt: skip

    if settings.mode == "online":
        upstream = UpstreamClient(
            settings,
            coordinator.limiter,
            transport=transport,
            on_attempt=lambda: counters.count("upstream_calls"),
            observer=metrics,
            on_free_call=free_call,
        )
        fetcher = Fetcher(settings, entries, coordinator, upstream, counters, metrics)
    pipeline = Pipeline(settings, entries, counters, fetcher, metrics)
    budget = Budget(coordinator, settings.gateway.daily_credit_budget)
    exposed = not is_loopback(settings.gateway.host)

    def generation_route(path: str, route: RouteSpec) -> Route:
        async def endpoint(request: Request) -> Response:
            return await pipeline.handle(request, route)

        return Route(path, endpoint, methods=["POST"])

    async def healthz(request: Request) -> Response:
        # 200 either way: a replica whose Redis is away still answers what its memory
        # holds, and a load balancer taking every replica out would answer nothing.
        reachable = await backends.healthy()
        return JSONResponse(
            {
                "status": "ok" if reachable else "degraded",
                "mode": settings.mode,
                "backend": backends.kind,
                "backend_reachable": reachable,
                "blobs": backends.blobs,
            }
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        v2 = is_v2(request.url.path)
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return GatewayError(
                f"{request.method} is not allowed on {request.url.path}",
                name="method_not_allowed",
                status=405,
                headers=exc.headers,
            ).response(v2=v2)
        return NotFound(f"no such route: {request.method} {request.url.path}").response(v2=v2)

    async def gateway_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, GatewayError)
        return exc.response(v2=is_v2(request.url.path))

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
        if settings.mode == "offline":
            log.warning(
                "OFFLINE MODE: no request reaches Stability; every miss gets a placeholder "
                "image (set STABILITY_API_KEY to go online)"
            )
        if settings.mode == "online" and not settings.api_key:
            log.info("no STABILITY_API_KEY: callers' own Authorization is forwarded upstream")
        if exposed and not settings.admin.token:
            log.warning(
                "listening on %s without an admin token: the /cache inspection endpoints "
                "answer 401 until STABILITY_GATEWAY_ADMIN_TOKEN is set",
                settings.gateway.host,
            )
        flusher = asyncio.ensure_future(counters.run())
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            if fetcher is not None:  # images answered but still being stored
                await fetcher.flights.settled(SHUTDOWN_SETTLE_SECONDS)
            await counters.flush()
            if upstream is not None:
                await upstream.aclose()
            if owns_backends:
                await backends.aclose()
            metrics.process_gone()

    def entry_price(meta: EntryMeta) -> float | None:
        """What one hit on this entry saves (placeholders save nothing)."""
        if meta.source != "upstream":
            return None
        return price_of(settings.prices, meta.route, meta.engine) * len(meta.artifacts)

    inspection = InspectionAPI(
        entries,
        counters,
        settings.admin.token,
        exposed=exposed,
        settle=(lambda: fetcher.flights.settled(SETTLE_SECONDS)) if fetcher else None,
        coordinator=coordinator,
        variants=settings.cache.variants if settings.cache.random_seed_policy == "variants" else 0,
    )

    async def refresh_gauges() -> None:
        """The gauges that describe shared state, read when scraped."""
        await counters.flush()
        totals = await entries.totals()
        metrics.entries.set(totals.entries)
        metrics.bytes.set(totals.bytes)
        remaining = await budget.remaining()
        if remaining is not None:
            metrics.budget.set(remaining)

    async def scrape(request: Request) -> Response:
        body, content_type = await metrics.render(refresh_gauges)
        return Response(body, media_type=content_type.split(";")[0],
                        headers={"Content-Type": content_type})  # fmt: skip

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        generation_route(
            "/v1/generation/{engine_id}/text-to-image", TextToImage(settings.defaults)
        ),
        *(
            generation_route(f"/v1/generation/{{engine_id}}/{route.suffix}", route)
            for route in (
                ImageToImage("image-to-image"),
                ImageToImage("masking"),
                ImageToImage("upscale"),
            )
        ),
        *(generation_route(row.path, StableImage(row)) for row in V2_ROUTES),
        *AccountPassThrough(settings, upstream).routes(),
        *Results(settings, entries, fetcher).routes(),
        *inspection.routes(),
        Route("/metrics", inspection.guard(scrape), methods=["GET"]),
        *gallery_routes(
            settings, backends, counters, exposed=exposed, fetcher=fetcher, price_of=entry_price
        ),
        *Forwarded(settings, upstream).routes(),  # last: any other /v1, /v2beta, /v2 path
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(AccessLog, observe=metrics.request),
            Middleware(CallerGate, settings=settings, coordinator=coordinator),
            Middleware(BodySizeLimit, max_bytes=settings.gateway.max_body_bytes),
        ],
        exception_handlers={404: not_found, 405: not_found, GatewayError: gateway_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backends = backends
    app.state.counters = counters
    app.state.metrics = metrics
    return app


def app_from_environment() -> Starlette:
    """uvicorn factory: settings from $STABILITY_GATEWAY_CONFIG / ./config.toml / env."""
    settings = load_settings()
    configure_logging(
        settings.gateway.log_level,
        [settings.api_key, settings.admin.token],
        json_lines=settings.gateway.log_format == "json",
    )
    return create_app(settings)
