"""The header's small chart: hits and upstream calls per UTC day, as inline-SVG geometry.

Pure arithmetic on the ledger's per-day totals (`LedgerPage.days`): the template draws the
bars. Days without records are drawn as empty slots, so the axis is a steady run of days;
when the whole span has no record at all there is no chart (None), not an empty frame.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cache.interfaces import Coordinator, LedgerQuery
from gateway.web.filters import day_start

DAYS = 14
TODAY_SECONDS = 15.0  # how long today's totals are reused before the ledger is asked again
GRACE_SECONDS = 300.0  # a day is closed this long after its midnight (late flushes)
WIDTH = 420
HEIGHT = 96
PAD_TOP = 8
PAD_BOTTOM = 16  # room for the first and last day's labels
BAR_GAP = 1


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    kind: str  # "hits" or "calls"
    label: str  # the tooltip: "2025-01-31: 12 hits"


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: tuple[Bar, ...]
    first_day: str
    last_day: str
    peak: int
    baseline: float
    total_hits: int
    total_calls: int


class LedgerDays:
    """The ledger's per-day totals over the chart's span, asked for sparingly.

    Summing a day's records costs the ledger a pass over them (measured: ~0.3 s for 100,000
    records over 14 days, bench/gallery_page.py), and a closed day's totals never change.
    So each process asks once for the closed days, and for the open ones (today, and
    yesterday for GRACE_SECONDS after midnight, while late records may still arrive) at
    most every TODAY_SECONDS: the chart may be that many seconds behind.
    """

    def __init__(self, coordinator: Coordinator, *, ttl: float = TODAY_SECONDS) -> None:
        self.coordinator = coordinator
        self.ttl = ttl
        self._closed: dict[str, Mapping[str, float]] = {}
        self._open: tuple[float, float, dict[str, Mapping[str, float]]] | None = None

    async def totals(
        self, days: list[str], now: float | None = None
    ) -> dict[str, Mapping[str, float]]:
        """Totals of `days` (oldest first, the last one today), as `LedgerPage.days`."""
        now = time.time() if now is None else now
        open_from = day_start(days[-1])
        if now - open_from < GRACE_SECONDS and len(days) > 1:
            open_from = day_start(days[-2])
        closed = [d for d in days if day_start(d) < open_from]
        missing = [d for d in closed if d not in self._closed]
        if missing:
            page = await self.coordinator.query_ledger(
                LedgerQuery(limit=1, since=day_start(missing[0]), until=open_from)
            )
            for d in missing:
                self._closed[d] = page.days.get(d, {})
        for d in [d for d in self._closed if d not in days]:
            del self._closed[d]
        held = self._open
        if held is None or held[0] != open_from or now - held[1] >= self.ttl:
            page = await self.coordinator.query_ledger(LedgerQuery(limit=1, since=open_from))
            held = self._open = (open_from, now, dict(page.days))
        recent = {d: totals for d, totals in held[2].items() if d in days}
        return {**{d: self._closed[d] for d in closed}, **recent}


def span(today: dt.date, days: int = DAYS) -> list[str]:
    """The last `days` UTC days, oldest first, ending with `today`."""
    return [(today - dt.timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


def day_chart(per_day: Mapping[str, Mapping[str, float]], days: list[str]) -> Chart | None:
    hits = [int(per_day.get(d, {}).get("hits", 0)) for d in days]
    calls = [int(per_day.get(d, {}).get("calls", 0)) for d in days]
    peak = max([*hits, *calls], default=0)
    if peak <= 0:
        return None
    slot = WIDTH / len(days)
    bar_width = max(1.0, (slot - 3 * BAR_GAP) / 2)
    baseline = HEIGHT - PAD_BOTTOM
    room = baseline - PAD_TOP
    bars: list[Bar] = []
    for i, day in enumerate(days):
        for j, (kind, value) in enumerate((("hits", hits[i]), ("calls", calls[i]))):
            if value <= 0:
                continue
            h = max(1.0, room * value / peak)
            noun = ("hit" if value == 1 else "hits") if kind == "hits" else (
                "upstream call" if value == 1 else "upstream calls"
            )  # fmt: skip
            bars.append(
                Bar(
                    x=round(i * slot + BAR_GAP + j * (bar_width + BAR_GAP), 2),
                    y=round(baseline - h, 2),
                    width=round(bar_width, 2),
                    height=round(h, 2),
                    kind=kind,
                    label=f"{day}: {value} {noun}",
                )
            )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        bars=tuple(bars),
        first_day=days[0],
        last_day=days[-1],
        peak=peak,
        baseline=baseline,
        total_hits=sum(hits),
        total_calls=sum(calls),
    )
