"""The gallery's search form, read from a query string into an `EntryQuery`.

A person typing into a form makes mistakes: a value that cannot be used (a date that is not
a date, page "x") is dropped with a note shown above the grid, never a 400. Dates are UTC
days: `since` starts at that day's midnight, `until` includes its whole day.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlencode

from cache.interfaces import EntryQuery

PAGE_SIZE = 24
MAX_PAGE_SIZE = 96
MAX_TEXT = 200
MAX_PAGE = 10**7


@dataclass(frozen=True)
class Filters:
    q: str = ""
    route: str = ""
    engine: str = ""
    since: str = ""  # YYYY-MM-DD, as given (shown back in the form)
    until: str = ""
    page: int = 1
    per: int = PAGE_SIZE
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def active(self) -> bool:
        return bool(self.q or self.route or self.engine or self.since or self.until)

    def query(self) -> EntryQuery:
        return EntryQuery(
            limit=self.per,
            offset=(self.page - 1) * self.per,
            engine=self.engine or None,
            route=self.route or None,
            prompt=self.q or None,
            since=day_start(self.since) if self.since else None,
            until=day_start(self.until) + 86400 if self.until else None,
        )

    def url(self, path: str = "/gallery", **changes: object) -> str:
        """This search with some fields changed, as a link (defaults left out)."""
        f = replace(self, **changes)  # type: ignore[arg-type]
        params = {
            "q": f.q,
            "route": f.route,
            "engine": f.engine,
            "since": f.since,
            "until": f.until,
            "page": f.page if f.page != 1 else "",
            "per": f.per if f.per != PAGE_SIZE else "",
        }
        encoded = urlencode({k: v for k, v in params.items() if v != ""})
        return f"{path}?{encoded}" if encoded else path


def read_filters(params: Mapping[str, str]) -> Filters:
    notes: list[str] = []

    def text(name: str) -> str:
        value = (params.get(name) or "").strip()
        printable = "".join(c for c in value if unicodedata.category(c) != "Cc")
        if printable != value:  # a NUL is no search, and SQLite's full-text index refuses it
            notes.append(f"control characters were removed from {name}")
            value = printable.strip()
        if len(value) > MAX_TEXT:
            notes.append(f"{name} was cut to {MAX_TEXT} characters")
            value = value[:MAX_TEXT]
        return value

    def day(name: str) -> str:
        value = (params.get(name) or "").strip()
        if not value:
            return ""
        try:
            day_start(value)
        except ValueError:
            notes.append(f"{name} {value[:40]!r} is not a date (YYYY-MM-DD): ignored")
            return ""
        return value

    def number(name: str, default: int, high: int) -> int:
        raw = (params.get(name) or "").strip()
        if not raw:
            return default
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= high:
            notes.append(f"{name} {raw[:20]!r} is not a number from 1 to {high}: ignored")
            return default
        return int(raw)

    since, until = day("since"), day("until")
    if since and until and since > until:
        notes.append("since is after until: nothing can match")
    return Filters(
        q=text("q"),
        route=text("route"),
        engine=text("engine"),
        since=since,
        until=until,
        page=number("page", 1, MAX_PAGE),
        per=number("per", PAGE_SIZE, MAX_PAGE_SIZE),
        notes=tuple(notes),
    )


def day_start(value: str) -> float:
    """Midnight UTC of a YYYY-MM-DD day, as a Unix time; ValueError for anything else."""
    if len(value) != 10:
        raise ValueError(value)
    day = dt.date.fromisoformat(value)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()
