"""The gallery: `GET /gallery`, a page of the cache a person would rather look at than JSON.

    GET  /gallery                        totals, a chart of the last days, the grid, search
    GET  /gallery/entries/{key}          one entry: its images, every field, download, delete
    POST /gallery/entries/{key}/delete   delete it (a form post of the gallery's own pages)
    GET  /gallery/thumbs/{key}/{sha256}  a thumbnail (gateway/web/thumbs.py)
    GET  /gallery/images/{key}/{sha256}  the full image; ?download=1 as an attachment
    GET  /gallery/login, POST /gallery/login, POST /gallery/logout
    GET  /gallery/static/...             the stylesheet and script (no build step)

Server-rendered with Jinja2 (autoescaped); every list comes from `EntryStore.list`, i.e. the
index, so a page costs the same with 100,000 entries as with 10. Who may see it is
gateway/web/auth.py's call. Pages answer errors as HTML pages; thumbnails, images and
anything asked for without `Accept: text/html` answer them in Stability's JSON shape.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from cache.interfaces import CoordinationError, Coordinator, StoreError
from cache.memory import TieredEntryStore
from cache.model import Artifact
from gateway.counters import Counters
from gateway.errors import (
    BadRequest,
    GatewayError,
    NotFound,
    Unauthorized,
    UpstreamUnavailable,
)
from gateway.http.access import note_error
from gateway.stats import KeyNotFound, find_key, summarise
from gateway.web import chart, views
from gateway.web.auth import Access, GalleryAuth, same_origin
from gateway.web.filters import read_filters
from gateway.web.thumbs import Thumbnailer

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
IMMUTABLE = "private, max-age=31536000, immutable"
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
_SHA = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]{8,64}")

Endpoint = Callable[[Request], Awaitable[Response]]


def _asset_version() -> str:
    """A digest of the static files, put in their URLs so a new release is never served a
    browser's old copy."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def local_path(value: str | None, default: str = "/gallery") -> str:
    """`value` if it is a path of the gallery (a login's `next`, a delete's way back),
    else `default`: never a redirect to another site."""
    if not value:
        return default
    try:
        parts = urlsplit(value)
    except ValueError:
        return default
    if parts.scheme or parts.netloc or "\\" in value or not value.startswith("/gallery"):
        return default
    if not (parts.path == "/gallery" or parts.path.startswith("/gallery/")):
        return default
    return value


class Gallery:
    def __init__(
        self,
        entries: TieredEntryStore,
        coordinator: Coordinator,
        counters: Counters,
        *,
        admin_token: str,
        exposed: bool,
        thumbs_dir: str | Path,
        routes: Sequence[str] = (),
        engines: Sequence[str] = (),
        settle: Callable[[], Awaitable[None]] | None = None,
        price_of: views.PriceOf = views.summary_price,
    ) -> None:
        self.entries = entries
        self.coordinator = coordinator
        self.counters = counters
        self.auth = GalleryAuth(admin_token, exposed=exposed)
        self.thumbs = Thumbnailer(thumbs_dir)
        self.known_routes = list(routes)
        self.known_engines = list(engines)
        self.settle = settle  # see InspectionAPI: what was just answered shows up here
        self.price_of = price_of
        self.ledger_days = chart.LedgerDays(coordinator)
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        env.globals["asset_version"] = _asset_version()
        self.templates = Jinja2Templates(env=env)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/gallery", self.guard(self.index), methods=["GET"]),
            Route("/gallery/login", self.login_form, methods=["GET"]),
            Route("/gallery/login", self.login, methods=["POST"]),
            Route("/gallery/logout", self.logout, methods=["POST"]),
            Route("/gallery/entries/{key}", self.guard(self.detail), methods=["GET"]),
            Route("/gallery/entries/{key}/delete", self.guard(self.delete), methods=["POST"]),
            Route("/gallery/thumbs/{key}/{sha256}", self.guard(self.thumb), methods=["GET"]),
            Route("/gallery/images/{key}/{sha256}", self.guard(self.image), methods=["GET"]),
            Mount("/gallery/static", app=StaticFiles(directory=STATIC), name="gallery-static"),
        ]

    # -- access -----------------------------------------------------------------------------

    def guard(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            try:
                access = self.auth.check(request)
                if access is not Access.OPEN:
                    return self.refuse(request, access)
                if self.settle is not None:
                    await self.settle()
                return await endpoint(request)
            except (StoreError, CoordinationError) as exc:
                return self.error(
                    request,
                    UpstreamUnavailable(
                        f"the cache at {exc.where} cannot be read: {exc}",
                        name="cache_unavailable",
                    ),
                )
            except GatewayError as exc:
                return self.error(request, exc)

        return guarded

    def refuse(self, request: Request, access: Access) -> Response:
        if access is Access.CLOSED:
            return self.error(
                request,
                Unauthorized(
                    "the gallery is closed: this gateway listens beyond loopback without an "
                    "admin token; set STABILITY_GATEWAY_ADMIN_TOKEN",
                    headers={"WWW-Authenticate": "Bearer"},
                ),
            )
        if access is Access.FOREIGN_HOST:
            return self.error(
                request,
                GatewayError(
                    "without an admin token the gallery answers only to loopback names "
                    "(localhost, 127.0.0.1); set STABILITY_GATEWAY_ADMIN_TOKEN to reach it "
                    "by another name",
                    name="forbidden_host",
                    status=403,
                ),
            )
        if request.method == "GET" and wants_html(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(
                "/gallery/login?" + urlencode({"next": target}),
                status_code=303,
                headers={"Cache-Control": "no-store"},
            )
        return self.error(
            request,
            Unauthorized(
                "the gallery needs the admin token: log in at /gallery/login, or send "
                "Authorization: Bearer <admin token>",
                headers={"WWW-Authenticate": "Bearer"},
            ),
        )

    def error(self, request: Request, exc: GatewayError) -> Response:
        if not wants_html(request):
            return exc.response()
        ident = uuid.uuid4().hex
        note_error(exc.name, ident, exc.message if exc.status < 500 else "")
        return self.page(
            request,
            "error.html",
            {"status": exc.status, "name": exc.name, "message": exc.message, "ident": ident},
            status=exc.status,
            headers=exc.headers,
        )

    def page(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> Response:
        context.setdefault(
            "logged_in", self.auth.token_required and self.auth.check(request) is Access.OPEN
        )
        return self.templates.TemplateResponse(
            request, template, context, status_code=status,
            headers={**PAGE_HEADERS, **(headers or {})},
        )  # fmt: skip

    def cross_origin(self, request: Request) -> Response:
        return self.error(
            request,
            GatewayError(
                "this form was not sent from one of the gallery's own pages (its Origin "
                "names another site): refused",
                name="cross_origin",
                status=403,
            ),
        )

    # -- login --------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        target = local_path(request.query_params.get("next"))
        if not self.auth.token_required or self.auth.check(request) is Access.OPEN:
            return RedirectResponse(target, status_code=303)
        return self.page(request, "login.html", {"next": target, "failed": False,
                                                 "logged_in": False})  # fmt: skip

    async def login(self, request: Request) -> Response:
        if not same_origin(request):
            return self.cross_origin(request)
        if not self.auth.token_required:
            return RedirectResponse("/gallery", status_code=303)
        try:
            form = await self._form(request)
        except BadRequest as exc:
            return self.error(request, exc)
        given = form.get("token")
        target = local_path(str(form.get("next") or ""))
        if not isinstance(given, str) or not self.auth.token_matches(given.strip()):
            context = {"next": target, "failed": True, "logged_in": False}
            return self.page(request, "login.html", context, status=401)
        response = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
        self.auth.start_session(request, response)
        return response

    async def logout(self, request: Request) -> Response:
        if not same_origin(request):
            return self.cross_origin(request)
        response = RedirectResponse("/gallery/login", status_code=303)
        self.auth.end_session(response)
        return response

    # -- pages --------------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        filters = read_filters(request.query_params)
        counts = await self.counters.totals()  # flushes this worker's hits first
        page = await self.entries.list(filters.query())
        store = await self.entries.totals()
        today = dt.datetime.now(dt.UTC).date()
        days = chart.span(today)
        per_day = await self.ledger_days.totals(days)
        pages = max(1, -(-page.total // filters.per))
        deleted = request.query_params.get("deleted", "")
        context = {
            "totals": views.totals(
                summarise(store.entries, store.bytes, store.disk_bytes, counts),
                counts,
                today.isoformat(),
            ),
            "chart": chart.day_chart(per_day, days),
            "cards": [views.card(m, self.price_of) for m in page.entries],
            "filters": filters,
            "total": page.total,
            "first": (filters.page - 1) * filters.per + 1 if page.entries else 0,
            "last": (filters.page - 1) * filters.per + len(page.entries),
            "page_number": filters.page,
            "pages": pages,
            "prev_url": filters.url(page=filters.page - 1) if filters.page > 1 else "",
            "next_url": filters.url(page=filters.page + 1) if filters.page < pages else "",
            "first_url": filters.url(page=1),
            "last_url": filters.url(page=pages),
            "routes": sorted({*self.known_routes, *([filters.route] if filters.route else [])}),
            "engines": self.known_engines,
            "deleted": deleted if _HEX.fullmatch(deleted) else "",
            "back": filters.url(),
            # Detail links carry the search, so "back" and a delete return to it.
            "detail_suffix": "?" + urlencode({"back": filters.url()})
            if filters.url() != "/gallery"
            else "",
        }
        return self.page(request, "gallery.html", context)

    async def detail(self, request: Request) -> Response:
        key = await self._key(request)
        await self.counters.flush()
        meta = await self.entries.get_meta(key)
        if meta is None:
            raise NotFound(f"no cache entry with key {key!r}")
        context = {
            "card": views.card(meta, self.price_of),
            "fields": views.fields(meta, self.price_of),
            "images": views.image_views(meta),
            "back": local_path(request.query_params.get("back")),
        }
        return self.page(request, "detail.html", context)

    async def delete(self, request: Request) -> Response:
        if not same_origin(request):
            return self.cross_origin(request)
        key = await self._key(request)
        form = await self._form(request)
        back = local_path(str(form.get("back") or ""))
        if not await self.entries.delete(key):
            raise NotFound(f"no cache entry with key {key!r}")
        parts = urlsplit(back)
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("deleted="))
        target = f"{parts.path}?{query + '&' if query else ''}deleted={key[:16]}"
        return RedirectResponse(target, status_code=303)

    # -- images -------------------------------------------------------------------------------

    async def thumb(self, request: Request) -> Response:
        key, sha256 = await self._key(request), self._sha(request)
        etag = f'"{sha256[:32]}-{self.thumbs.px}"'
        meta = await self.entries.get_meta(key)
        if meta is None or all(a.sha256 != sha256 for a in meta.artifacts):
            raise NotFound(f"entry {key[:16]} has no image {sha256[:16]}")
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag, "Cache-Control": IMMUTABLE})

        async def image() -> bytes | None:
            artifact = await self._artifact(key, sha256)
            return artifact.data if artifact is not None else None

        thumb = await self.thumbs.get(sha256, image)
        if thumb is None:
            raise NotFound(f"entry {key[:16]} has no image {sha256[:16]}")
        return Response(
            thumb.data,
            media_type=thumb.media_type,
            headers={"Cache-Control": IMMUTABLE, "ETag": etag, "X-Content-Type-Options": "nosniff"},
        )

    async def image(self, request: Request) -> Response:
        key, sha256 = await self._key(request), self._sha(request)
        entry = await self.entries.get(key)
        found = [
            (i, a) for i, a in enumerate(entry.artifacts if entry else ()) if a.sha256 == sha256
        ]
        if not found:
            raise NotFound(f"entry {key[:16]} has no image {sha256[:16]}")
        index, artifact = found[0]
        headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"}
        if request.query_params.get("download"):
            name = views.download_name(key, index, artifact.media_type)
            headers["Content-Disposition"] = f'attachment; filename="{name}"'
        return Response(artifact.data, media_type=artifact.media_type, headers=headers)

    async def _artifact(self, key: str, sha256: str) -> Artifact | None:
        entry = await self.entries.get(key)
        if entry is None:
            return None
        return next((a for a in entry.artifacts if a.sha256 == sha256), None)

    @staticmethod
    async def _form(request: Request) -> FormData:
        """The posted form (a few small fields: no files); BadRequest for a malformed one."""
        try:
            return await request.form(max_files=0, max_fields=8)
        except HTTPException as exc:  # starlette's own, for a malformed or oversized form
            raise BadRequest(f"the form could not be read: {exc.detail}") from None

    async def _key(self, request: Request) -> str:
        try:
            return await find_key(self.entries, request.path_params["key"])
        except KeyNotFound as exc:
            raise NotFound(str(exc)) from None

    @staticmethod
    def _sha(request: Request) -> str:
        sha256 = str(request.path_params["sha256"]).lower()
        if not _SHA.fullmatch(sha256):
            raise NotFound("an image is named by its SHA-256 (64 hex characters)")
        return sha256
