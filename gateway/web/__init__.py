"""The gallery page (gateway/web/gallery.py): templates and static files ship in this package.

`gallery_routes` is what the app factory mounts: it picks what the gallery needs out of the
gateway's settings and backends.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute

from gateway.backends import Backends
from gateway.config import Settings
from gateway.counters import Counters
from gateway.fetch import Fetcher
from gateway.routes.image_to_image import SUFFIXES
from gateway.routes.stable_image import V2_ROUTES
from gateway.routes.text_to_image import ROUTE as TEXT_TO_IMAGE
from gateway.web.gallery import Gallery
from gateway.web.views import PriceOf, summary_price

__all__ = ["Gallery", "gallery_routes"]

SETTLE_SECONDS = 5.0

# The route names entries are filed under (their summary's "route"), for the filter menu.
ROUTE_NAMES = (
    TEXT_TO_IMAGE,
    *(f"v1/{suffix}" for suffix in SUFFIXES.values()),
    *(row.path.lstrip("/") for row in V2_ROUTES),
)


def gallery_routes(
    settings: Settings,
    backends: Backends,
    counters: Counters,
    *,
    exposed: bool,
    fetcher: Fetcher | None = None,
    price_of: PriceOf = summary_price,
) -> list[BaseRoute]:
    """The gallery's routes. With a `fetcher` (online mode), a page first waits (up to
    SETTLE_SECONDS) for images this process answered and is still storing, as /cache does."""
    gallery = Gallery(
        backends.entries,
        backends.coordinator,
        counters,
        admin_token=settings.admin.token,
        exposed=exposed,
        thumbs_dir=Path(settings.cache.dir) / "thumbs",
        routes=ROUTE_NAMES,
        engines=settings.gateway.engines,
        settle=(lambda: fetcher.flights.settled(SETTLE_SECONDS)) if fetcher else None,
        price_of=price_of,
    )
    return gallery.routes()
