"""Cache inspection over HTTP: what the cache holds, what it saved, each image.

With an admin token configured every endpoint here requires `Authorization: Bearer
<token>`. Without one they are open only while the gateway listens on loopback (a
developer's own machine); bound to anything else (the Docker image listens on all
interfaces), they answer 401 and say to set STABILITY_GATEWAY_ADMIN_TOKEN. Entries may be
named by their full key or by any unique prefix of 8 or more hex characters.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cache.interfaces import CoordinationError, Coordinator, EntryQuery, LedgerQuery, StoreError
from cache.memory import TieredEntryStore
from gateway.counters import Counters
from gateway.errors import BadRequest, GatewayError, NotFound, Unauthorized, UpstreamUnavailable
from gateway.stats import KeyNotFound, cache_stats, find_key, variants_of

Endpoint = Callable[[Request], Awaitable[Response]]


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def resolve_key(entries: TieredEntryStore, given: str) -> str:
    try:
        return await find_key(entries, given)
    except KeyNotFound as exc:
        raise NotFound(str(exc)) from None


class InspectionAPI:
    def __init__(
        self,
        entries: TieredEntryStore,
        counters: Counters,
        admin_token: str,
        *,
        exposed: bool = False,
        settle: Callable[[], Awaitable[None]] | None = None,
        coordinator: Coordinator | None = None,
        variants: int = 0,
    ) -> None:
        self.coordinator = coordinator
        self.variants = variants  # random-seed variants a key may have (0: the policy is off)
        self.entries = entries
        self.counters = counters
        # Images this process answered and is still storing are waited for first, so that
        # what a caller was just given shows up here.
        self.settle = settle
        self.admin_token = admin_token
        self.exposed = exposed  # listening beyond loopback

    def routes(self) -> list[Route]:
        return [
            Route("/cache/stats", self.guard(self.stats), methods=["GET"]),
            Route("/cache/entries", self.guard(self.list_entries), methods=["GET"]),
            Route("/cache/entries/{key}", self.guard(self.entry), methods=["GET"]),
            Route("/cache/entries/{key}", self.guard(self.delete), methods=["DELETE"]),
            Route("/cache/entries/{key}/image", self.guard(self.image), methods=["GET"]),
            Route("/cache/ledger", self.guard(self.ledger), methods=["GET"]),
        ]

    def guard(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            try:
                self.authorize(request)
                if self.settle is not None:
                    await self.settle()
                return await endpoint(request)
            except (StoreError, CoordinationError) as exc:  # the counters are the coordinator's
                return UpstreamUnavailable(
                    f"the cache at {exc.where} cannot be read: {exc}", name="cache_unavailable"
                ).response()
            except GatewayError as exc:
                return exc.response()

        return guarded

    def authorize(self, request: Request) -> None:
        if not self.admin_token:
            if self.exposed:
                raise Unauthorized(
                    "the cache inspection endpoints are closed: this gateway listens beyond "
                    "loopback without an admin token; set STABILITY_GATEWAY_ADMIN_TOKEN",
                    headers={"WWW-Authenticate": "Bearer"},
                )
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
        return JSONResponse(await cache_stats(self.entries, await self.counters.totals()))

    async def list_entries(self, request: Request) -> Response:
        limit = _int_param(request, "limit", 50, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, None)
        await self.counters.flush()
        query = EntryQuery(
            limit=limit,
            offset=offset,
            engine=request.query_params.get("engine") or None,
            route=request.query_params.get("route") or None,
            prompt=request.query_params.get("q") or request.query_params.get("prompt") or None,
            since=_float_param(request, "since"),
            until=_float_param(request, "until"),
        )
        page = await self.entries.list(query)
        return JSONResponse(
            {
                "total": page.total,
                "limit": limit,
                "offset": offset,
                "entries": [m.public() for m in page.entries],
            }
        )

    async def ledger(self, request: Request) -> Response:
        """The credits ledger: records newest first (paginated), and totals per UTC day over
        the same filters."""
        if self.coordinator is None:
            raise NotFound("no ledger: this gateway has no coordinator")
        limit = _int_param(request, "limit", 100, 1, 1000)
        offset = _int_param(request, "offset", 0, 0, None)
        await self.counters.flush()
        query = LedgerQuery(
            limit=limit,
            offset=offset,
            since=_time_param(request, "since"),
            until=_time_param(request, "until"),
            route=request.query_params.get("route") or None,
            caller=request.query_params.get("caller") or None,
            kind=request.query_params.get("kind") or None,
        )
        page = await self.coordinator.query_ledger(query)
        return JSONResponse(
            {
                "total": page.total,
                "limit": limit,
                "offset": offset,
                "records": [r.as_dict() for r in page.records],
                "days": page.days,
            }
        )

    async def _meta(self, request: Request) -> dict[str, Any]:
        """An entry, with its random-seed variants when it has some; a request key whose
        only entries are variants shows just those."""
        key = request.path_params["key"]
        if len(key) != 64:
            key = await resolve_key(self.entries, key)
        await self.counters.flush()
        meta = await self.entries.get_meta(key)
        base = str(meta.summary.get("variant_of") or key) if meta is not None else key
        variants = await variants_of(self.entries, base, self.variants) if self.variants else []
        if meta is None and not variants:
            raise NotFound(f"no cache entry with key {key!r}")
        shown: dict[str, Any] = meta.public() if meta is not None else {"key": key}
        if variants:
            shown["variants"] = variants
        return shown

    async def entry(self, request: Request) -> Response:
        return JSONResponse(await self._meta(request))

    async def image(self, request: Request) -> Response:
        key = await resolve_key(self.entries, request.path_params["key"])
        entry = await self.entries.get(key)
        if entry is None:
            raise NotFound(f"no cache entry with key {key!r}")
        index = _int_param(request, "index", 0, 0, len(entry.artifacts) - 1)
        artifact = entry.artifacts[index]
        return Response(artifact.data, media_type=artifact.media_type)

    async def delete(self, request: Request) -> Response:
        key = await resolve_key(self.entries, request.path_params["key"])
        if not await self.entries.delete(key):
            raise NotFound(f"no cache entry with key {key!r}")
        return JSONResponse({"deleted": key})


def _int_param(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise BadRequest(f"{name} must be {bound}, got {value}")
    return value


def _time_param(request: Request, name: str) -> float | None:
    """A Unix time, or a UTC date (YYYY-MM-DD: its midnight)."""
    raw = request.query_params.get(name)
    if raw and len(raw) == 10 and raw[4] == "-" and raw[7] == "-":
        try:
            return dt.datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()
        except ValueError:
            raise BadRequest(f"{name}: not a date, got {raw!r}") from None
    return _float_param(request, name)


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a Unix time in seconds, got {raw[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise BadRequest(f"{name} must be a finite number")
    return value
