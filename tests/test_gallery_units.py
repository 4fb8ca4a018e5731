"""The gallery's parts on their own: sessions, same-origin checks, the search form, the
chart's geometry, thumbnails and their tiers, and the cards' figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from pathlib import Path

import pytest
from PIL import Image
from starlette.requests import Request

from cache.interfaces import LedgerPage, LedgerQuery
from cache.model import ArtifactInfo, EntryMeta
from gateway.web import chart, thumbs, views
from gateway.web.auth import (
    SESSION_SECONDS,
    loopback_host,
    same_origin,
    session_value,
    valid_session,
)
from gateway.web.filters import PAGE_SIZE, day_start, read_filters
from gateway.web.gallery import local_path

NOW = 1_750_000_000.0


def request(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw,
                    "query_string": b""})  # fmt: skip


# -- sessions and origins ---------------------------------------------------------------------


def test_a_session_is_derived_from_the_token_and_expires() -> None:
    value = session_value("tok", int(NOW))
    assert "tok" not in value and value.startswith(f"v1.{int(NOW)}.")
    assert valid_session("tok", value, NOW)
    assert valid_session("tok", value, NOW + SESSION_SECONDS - 1)
    assert not valid_session("tok", value, NOW + SESSION_SECONDS + 1)  # expired
    assert not valid_session("other", value, NOW)  # the token changed
    assert not valid_session("tok", session_value("tok", int(NOW) + 3600), NOW)  # future
    forged = value[:-1] + ("0" if value[-1] != "0" else "1")
    assert not valid_session("tok", forged, NOW)
    later = session_value("tok", int(NOW) + 10)
    assert not valid_session("tok", f"v1.{int(NOW)}.{later.rsplit('.', 1)[1]}", NOW)
    for junk in ("", "v1", "v1..", "v2.1.x", "v1.-5.x", "v1.1e9.x", "v1.१२३.x"):
        assert not valid_session("tok", junk, NOW), junk


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost:8080", True), ("127.0.0.1", True), ("127.3.4.5:1", True), ("[::1]:80", True),
     ("app.localhost", True), ("example.com", False), ("10.0.0.1:8080", False),
     ("127.0.0.1.nip.io", False), ("", False), ("[::1", False)],
)  # fmt: skip
def test_loopback_host(host: str, loopback: bool) -> None:
    assert loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({"Origin": "http://gw:8080"}, True),
        ({"Origin": "https://GW:8080"}, True),  # behind a TLS proxy: the host is what counts
        ({"Origin": "http://gw:8081"}, False),
        ({"Origin": "null"}, False),
        ({"Origin": "http://gw:8080.evil.example"}, False),
        ({"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"}, False),
        ({"Sec-Fetch-Site": "same-origin"}, True),
        ({"Sec-Fetch-Site": "same-site"}, False),
        ({"Sec-Fetch-Site": "none"}, False),
        ({"Referer": "http://gw:8080/gallery"}, True),
        ({"Referer": "http://evil.example/?http://gw:8080/"}, False),
        ({"Origin": "http://[::1"}, False),
        ({"Referer": "http://[gw:8080/"}, False),
        ({}, False),
    ],
)
def test_same_origin(headers: dict[str, str], same: bool) -> None:
    assert same_origin(request({"Host": "gw:8080", **headers})) is same
    assert not same_origin(request(headers))  # no Host: nothing to compare with


@pytest.mark.parametrize(
    ("given", "kept"),
    [("/gallery", True), ("/gallery?q=a&page=2", True), ("/gallery/entries/ab", True),
     ("", False), ("https://evil.example/gallery", False), ("//evil.example/gallery", False),
     ("/gallery\\..\\x", False), ("/galleryx", False), ("/cache/stats", False),
     ("gallery", False), ("/gallery?[::1", True), ("//[::1/gallery", False)],
)  # fmt: skip
def test_local_path_keeps_only_gallery_paths(given: str, kept: bool) -> None:
    assert local_path(given) == (given if kept else "/gallery")


# -- the search form ------------------------------------------------------------------------------


def test_filters_make_an_index_query_and_links() -> None:
    f = read_filters({"q": " fox ", "route": "v1/text-to-image", "since": "2025-01-02",
                      "until": "2025-01-03", "page": "3", "per": "10"})  # fmt: skip
    q = f.query()
    assert (q.prompt, q.route, q.engine, q.limit, q.offset) == ("fox", "v1/text-to-image",
                                                                None, 10, 20)  # fmt: skip
    assert q.since == dt.datetime(2025, 1, 2, tzinfo=dt.UTC).timestamp()
    assert q.until == dt.datetime(2025, 1, 4, tzinfo=dt.UTC).timestamp()  # the whole 3rd
    assert f.url(page=4) == (
        "/gallery?q=fox&route=v1%2Ftext-to-image&since=2025-01-02&until=2025-01-03&page=4&per=10"
    )
    assert read_filters({}).url() == "/gallery" and read_filters({}).per == PAGE_SIZE
    assert not read_filters({}).active and f.active
    assert f.notes == ()


@pytest.mark.parametrize(
    ("params", "note"),
    [({"since": "2025-1-2"}, "since"), ({"until": "tomorrow"}, "until"), ({"page": "0"}, "page"),
     ({"page": "٣"}, "page"), ({"per": "97"}, "per"), ({"q": "x" * 500}, "cut"),
     ({"q": "fox\x00"}, "control characters"), ({"engine": "a\tb"}, "control characters"),
     ({"since": "2025-02-01", "until": "2025-01-01"}, "nothing can match")],
)  # fmt: skip
def test_unusable_values_are_dropped_with_a_note(params: dict[str, str], note: str) -> None:
    f = read_filters(params)
    assert any(note in n for n in f.notes)
    f.query()  # always usable


def test_day_start_takes_only_iso_days() -> None:
    assert day_start("1970-01-02") == 86400
    for bad in ("20250102", "2025-13-01", "2025-01-02T00:00", ""):
        with pytest.raises(ValueError):
            day_start(bad)


# -- the chart ----------------------------------------------------------------------------------


def test_no_chart_without_records_and_bars_in_proportion_with_them() -> None:
    days = chart.span(dt.date(2025, 3, 14))
    assert len(days) == chart.DAYS and days[0] == "2025-03-01" and days[-1] == "2025-03-14"
    assert chart.day_chart({}, days) is None
    assert chart.day_chart({"2025-03-14": {"hits": 0, "calls": 0}}, days) is None
    drawn = chart.day_chart(
        {"2025-03-01": {"hits": 10, "calls": 5}, "2025-03-14": {"hits": 1, "calls": 0},
         "2024-01-01": {"hits": 99, "calls": 99}},  # outside the span: not drawn
        days,
    )  # fmt: skip
    assert drawn is not None
    assert drawn.peak == 10 and (drawn.total_hits, drawn.total_calls) == (11, 5)
    first_hits, first_calls, last_hits = drawn.bars
    assert first_hits.kind == "hits" and first_calls.kind == "calls"
    assert first_hits.height == pytest.approx(2 * first_calls.height)
    assert first_hits.y + first_hits.height == pytest.approx(drawn.baseline)
    assert last_hits.x > first_calls.x and last_hits.label == "2025-03-14: 1 hit"
    assert all(b.x >= 0 and b.x + b.width <= drawn.width for b in drawn.bars)


# -- thumbnails ---------------------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_render_keeps_the_aspect_and_alpha_and_never_enlarges() -> None:
    wide = Image.open(io.BytesIO(thumbs.render(encoded(Image.new("RGB", (1536, 640)), "PNG"))))
    assert wide.size == (320, 133) == thumbs.thumbnail_size(1536, 640)
    clear = Image.new("RGBA", (400, 400), (255, 0, 0, 0))
    kept = Image.open(io.BytesIO(thumbs.render(encoded(clear, "PNG"))))
    assert kept.mode == "RGBA" and kept.getpixel((5, 5))[3] == 0
    jpeg = Image.open(io.BytesIO(thumbs.render(encoded(Image.new("RGB", (2048, 1024)), "JPEG"),
                                               image_format="JPEG")))  # fmt: skip
    assert (jpeg.format, jpeg.size) == ("JPEG", (320, 160))
    tiny = Image.open(io.BytesIO(thumbs.render(encoded(Image.new("L", (50, 30)), "PNG"))))
    assert tiny.size == (50, 30) == thumbs.thumbnail_size(50, 30)
    assert thumbs.thumbnail_size(0, 0) == (320, 320)


def test_the_memory_tier_is_bounded_by_bytes() -> None:
    lru = thumbs._MemoryLRU(max_bytes=250)
    for i in range(5):
        lru.put(str(i), thumbs.Thumbnail(b"x" * 100, "image/webp"))
    assert len(lru) == 2 and lru.used == 200
    assert lru.get("0") is None and lru.get("4") is not None
    lru.put("big", thumbs.Thumbnail(b"x" * 1000, "image/webp"))
    assert lru.get("big") is None and len(lru) == 2


@pytest.mark.anyio
async def test_concurrent_asks_render_once_and_a_lost_image_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[bytes] = []
    real = thumbs.render
    monkeypatch.setattr(thumbs, "render", lambda d, px, f: made.append(d) or real(d, px, f))
    t = thumbs.Thumbnailer(tmp_path / "thumbs")
    png = encoded(Image.new("RGB", (640, 480), (1, 2, 3)), "PNG")
    reads = 0

    async def image() -> bytes:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return png

    got = await asyncio.gather(*(t.get("a" * 64, image) for _ in range(8)))
    assert len({g.data for g in got if g}) == 1 and len(made) == 1 and reads == 1
    assert t._gates == {}

    async def gone() -> None:
        return None

    assert await t.get("b" * 64, gone) is None
    t.close()


@pytest.mark.anyio
async def test_a_disk_tier_that_cannot_be_opened_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "thumbs"
    blocker.write_text("a file where the folder should be")
    t = thumbs.Thumbnailer(blocker)
    png = encoded(Image.new("RGB", (64, 64)), "PNG")

    async def image() -> bytes:
        return png

    first = await t.get("c" * 64, image)
    assert first is not None and first.media_type == "image/webp"
    assert await t.get("c" * 64, image) is first  # memory
    assert "keeping them in memory only" in caplog.text
    assert caplog.text.count("cannot use") == 1  # said once


# -- cards and figures --------------------------------------------------------------------------


def meta(**summary: object) -> EntryMeta:
    info = ArtifactInfo("d" * 64, 1000, 42, "SUCCESS", "image/png")
    return EntryMeta("e" * 64, "v", NOW, (info,), summary, hits=4)


def test_a_card_says_what_its_hits_saved_when_the_price_is_known() -> None:
    entry = meta(prompts=[{"text": "cat", "weight": 1}, {"text": "blurry", "weight": -1}],
                 width=1024, height=1024, engine="sdxl", route="v1/text-to-image")  # fmt: skip
    card = views.card(entry, views.summary_price)
    assert (card.prompt, card.negative, card.seed) == ("cat", "blurry", "42")
    assert card.size == "1024\u00d71024"
    assert card.saved == "0"  # no price recorded
    assert views.card(entry, lambda m: 2.5).saved == "10"
    assert views.card(meta(credits=3, width=1, height=1), views.summary_price).saved == "12"
    assert views.summary_price(meta(credits=True)) is None
    assert views.summary_price(meta(credits=-1)) is None
    assert views.card(meta(), views.summary_price).size == "?"


def test_figures_read_as_people_write_them() -> None:
    assert [views.credits_text(v) for v in (0, 3, 2.5, 0.126, 1234.5, -0.0)] == [
        "0", "3", "2.5", "0.13", "1,234.5", "0"
    ]  # fmt: skip
    assert [views.bytes_text(v) for v in (0, 1023, 1024, 5 * 1024**3)] == [
        "0 B", "1023 B", "1.0 KiB", "5.0 GiB"
    ]  # fmt: skip
    assert views.time_text(None) == "never"
    assert views.download_name("ab" * 32, 1, "image/jpeg") == "abababababababab-1.jpg"


class CountingLedger:
    """A coordinator's query_ledger that records what it was asked and answers from `days`."""

    def __init__(self, days: dict[str, dict[str, float]]) -> None:
        self.days = days
        self.asked: list[tuple[float | None, float | None]] = []

    async def query_ledger(self, query: LedgerQuery) -> LedgerPage:
        self.asked.append((query.since, query.until))
        low, high = query.since or 0.0, query.until or float("inf")
        return LedgerPage(0, [], {d: v for d, v in self.days.items() if low <= day_start(d) < high})


@pytest.mark.anyio
async def test_ledger_days_asks_for_closed_days_once_and_for_today_every_few_seconds() -> None:
    days = chart.span(dt.date(2025, 3, 14))
    ledger = CountingLedger({"2025-03-02": {"hits": 4}, "2025-03-14": {"hits": 1}})
    cached = chart.LedgerDays(ledger, ttl=15)  # type: ignore[arg-type]
    noon = day_start("2025-03-14") + 12 * 3600
    first = await cached.totals(days, now=noon)
    assert first == {**{d: {} for d in days[:-1]}, "2025-03-02": {"hits": 4},
                     "2025-03-14": {"hits": 1}}  # fmt: skip
    assert ledger.asked == [(day_start("2025-03-01"), day_start("2025-03-14")),
                            (day_start("2025-03-14"), None)]  # fmt: skip
    ledger.days["2025-03-14"] = {"hits": 2}
    assert (await cached.totals(days, now=noon + 5))["2025-03-14"] == {"hits": 1}  # reused
    assert (await cached.totals(days, now=noon + 16))["2025-03-14"] == {"hits": 2}
    assert len(ledger.asked) == 3 and ledger.asked[-1] == (day_start("2025-03-14"), None)
    # The next day: one more closed day is asked for; just after midnight yesterday is
    # still open (late records), so it is asked for with today.
    tomorrow = chart.span(dt.date(2025, 3, 15))
    await cached.totals(tomorrow, now=day_start("2025-03-15") + 10)
    assert ledger.asked[3:] == [(day_start("2025-03-14"), None)]
    await cached.totals(tomorrow, now=day_start("2025-03-15") + chart.GRACE_SECONDS + 1)
    assert ledger.asked[4:] == [(day_start("2025-03-14"), day_start("2025-03-15")),
                                (day_start("2025-03-15"), None)]  # fmt: skip
    assert "2025-03-01" not in cached._closed  # days out of the span are forgotten
