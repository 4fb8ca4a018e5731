"""The gallery in process (the real app, offline placeholders as entries): its pages, search
and filters, the detail view, delete, thumbnails, the admin-token flow and escaping. The
real-browser test is tests/test_gallery_browser.py."""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from PIL import Image

from cache.interfaces import EntryQuery, LedgerRecord
from gateway.config import Settings
from gateway.web import thumbs
from gateway.web.thumbs import THUMB_PX
from tests.fakes.multipart import encode_multipart
from tests.support.app import app_client
from tests.support.html import Node, parse

T2I = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
CORE = "/v2beta/stable-image/generate/core"
HTML = {"Accept": "text/html"}
LOCAL = "http://127.0.0.1:8080"
SAME_ORIGIN = {"Origin": LOCAL}
TOKEN = "gallery-admin-token-0123456789"
X, DASH = "\u00d7", "\u2013"  # how the page writes 1344x768 and 1-3
HOSTILE = "<script>alert('owned')</script> \"><img src=x onerror=alert(1)> a fox"


@pytest.fixture
def offline(tmp_path: Path) -> Settings:
    return Settings().replace(gateway={"mode": "offline"}, cache={"dir": str(tmp_path / "c")})


@pytest.fixture
async def client(offline: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(offline, base_url=LOCAL) as c:
        yield c


async def generate(
    client: httpx.AsyncClient, prompt: str, width: int = 1344, height: int = 768, **extra: Any
) -> str:
    body = {"text_prompts": [{"text": prompt}], "width": width, "height": height, **extra}
    response = await client.post(T2I, json=body)
    assert response.status_code == 200, response.text
    return response.headers["x-cache-key"]


async def page(client: httpx.AsyncClient, url: str = "/gallery", **params: str) -> Node:
    response = await client.get(url, params=params or None, headers=HTML)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    return parse(response.text)


def cards(doc: Node) -> list[dict[str, str]]:
    out = []
    for li in doc.find_all("li", cls="card"):
        meta = {dt_.text(): dd.text() for dt_, dd in _pairs(li.find("dl", cls="meta"))}
        out.append({"key": li.attrs["data-key"], "prompt": li.find("p", cls="prompt").text(),
                    "thumb": li.find("img").attrs["src"], **meta})  # fmt: skip
    return out


def _pairs(dl: Node) -> list[tuple[Node, Node]]:
    return [(div.find("dt"), div.find("dd")) for div in dl.find_all("div")]


# -- the grid -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_grid_shows_every_entry_newest_first_with_its_fields(
    client: httpx.AsyncClient,
) -> None:
    keys = [
        await generate(client, "a red barn", 1344, 768, seed=11),
        await generate(client, "a blue lake", 1024, 1024, seed=22),
        await generate(client, "a green hill", 768, 1344, seed=33),
    ]
    doc = await page(client)
    shown = cards(doc)
    assert [c["key"] for c in shown] == keys[::-1]
    assert [c["prompt"] for c in shown] == ["a green hill", "a blue lake", "a red barn"]
    assert [c["size"] for c in shown] == [f"768{X}1344", f"1024{X}1024", f"1344{X}768"]
    assert [c["seed"] for c in shown] == ["33", "22", "11"]
    assert {c["engine"] for c in shown} == {"stable-diffusion-xl-1024-v1-0"}
    assert [c["hits"] for c in shown] == ["0", "0", "0"]
    assert [c["saved"] for c in shown] == ["0 cr"] * 3
    assert doc.find(id="total-entries").text() == "3"
    assert f"1{DASH}3 of 3 entries" in doc.find(id="result-count").text()


@pytest.mark.anyio
async def test_hits_show_on_their_card_and_in_the_hit_ratio(client: httpx.AsyncClient) -> None:
    await generate(client, "hit me")
    await generate(client, "hit me")
    await generate(client, "hit me")
    await generate(client, "only once")
    doc = await page(client)
    hits = {c["prompt"]: c["hits"] for c in cards(doc)}
    assert hits == {"hit me": "2", "only once": "0"}
    ratio = next(dd.text() for dt_, dd in _pairs(doc.find("section", cls="totals").find("dl"))
                 if dt_.text() == "Hit ratio")  # fmt: skip
    assert ratio == "50.0 %"  # 2 hits, 2 misses


@pytest.mark.anyio
async def test_a_prompt_with_markup_is_shown_as_text_everywhere(client: httpx.AsyncClient) -> None:
    key = await generate(client, HOSTILE)
    for url in ("/gallery", f"/gallery/entries/{key}", "/gallery?q=%3Cscript%3E"):
        response = await client.get(url, headers=HTML)
        assert response.status_code == 200
        assert "<script>alert" not in response.text
        assert "<img src=x" not in response.text
        doc = parse(response.text)
        # The only script element is the gallery's own, and no element has an event handler.
        scripts = doc.find_all("script")
        assert [s.attrs.get("src", "").split("?")[0] for s in scripts] == [
            "/gallery/static/gallery.js"
        ]
        assert all(s.text() == "" for s in scripts)
        assert not [n for n in doc.iter() if any(a.startswith("on") for a in n.attrs)]
        assert HOSTILE in doc.text()  # shown, as text
    assert "script-src 'self'" in response.headers["content-security-policy"]


# -- search, filters, pagination ----------------------------------------------------------


@pytest.mark.anyio
async def test_search_and_filters_narrow_the_grid_through_the_index(
    client: httpx.AsyncClient,
) -> None:
    for prompt in ("a lighthouse at dusk", "a Lighthouse in fog", "a quiet harbour"):
        await generate(client, prompt)
    body, content_type = encode_multipart([("prompt", "a lighthouse from the sea")], "b0undary")
    v2 = await client.post(CORE, content=body, headers=content_type)
    assert v2.status_code == 200, v2.text
    asked: list[EntryQuery] = []
    store = client.app.state.backends.entries  # type: ignore[attr-defined]
    real_list = store.list

    async def spy(query: EntryQuery) -> Any:
        asked.append(query)
        return await real_list(query)

    store.list = spy

    found = cards(await page(client, q="lighthouse"))
    assert sorted(c["prompt"] for c in found) == [
        "a Lighthouse in fog", "a lighthouse at dusk", "a lighthouse from the sea"
    ]  # fmt: skip
    assert asked[-1] == EntryQuery(limit=24, offset=0, prompt="lighthouse")

    found = cards(await page(client, q="lighthouse", route="v1/text-to-image"))
    assert sorted(c["prompt"] for c in found) == ["a Lighthouse in fog", "a lighthouse at dusk"]

    found = cards(await page(client, engine="core"))
    assert [c["prompt"] for c in found] == ["a lighthouse from the sea"]
    assert asked[-1].engine == "core"

    today = dt.datetime.now(dt.UTC).date()
    day = dt.timedelta(days=1)
    assert len(cards(await page(client, since=today.isoformat(), until=today.isoformat()))) == 4
    assert cards(await page(client, since=(today + day).isoformat())) == []
    assert cards(await page(client, until=(today - day).isoformat())) == []
    midnight = dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC).timestamp()
    assert asked[-1].until == midnight  # until yesterday: up to today's midnight

    assert len(cards(await page(client, q="\x00lighthouse\x1b"))) == 3  # a NUL is dropped
    empty = await page(client, q="no such thing")
    assert "No entry matches" in empty.find(id="result-count").text()
    assert all(q.limit == 24 for q in asked)  # every page came from EntryStore.list


@pytest.mark.anyio
async def test_pages_of_24_with_links_that_keep_the_search(client: httpx.AsyncClient) -> None:
    keys = [await generate(client, f"tile number {i:02d}", seed=i + 1) for i in range(30)]
    first = await page(client, q="tile")
    assert [c["key"] for c in cards(first)] == keys[::-1][:24]
    nav = first.find("nav", cls="pages")
    assert "page 1 of 2" in nav.text()
    older = nav.find("a", rel="next").attrs["href"]
    assert parse_qs(urlsplit(older).query) == {"q": ["tile"], "page": ["2"]}
    second = await page(client, older)
    assert [c["key"] for c in cards(second)] == keys[::-1][24:]
    assert f"25{DASH}30 of 30" in second.find(id="result-count").text()
    small = await page(client, per="10", page="3")
    assert [c["key"] for c in cards(small)] == keys[::-1][20:30]


@pytest.mark.anyio
async def test_unusable_form_values_are_noted_not_refused(client: httpx.AsyncClient) -> None:
    await generate(client, "anything")
    doc = await page(client, since="31/12/2024", page="zero", per="100000")
    notes = [p.text() for p in doc.find_all("p", cls="warn")]
    assert any("since '31/12/2024' is not a date" in n for n in notes)
    assert any("page 'zero'" in n for n in notes)
    assert any("per '100000'" in n for n in notes)
    assert len(cards(doc)) == 1


# -- totals and the chart ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_credit_totals_are_zero_until_the_ledger_counts_then_shown(
    client: httpx.AsyncClient,
) -> None:
    await generate(client, "one")
    doc = await page(client)
    for ident in ("spent-today", "spent-all", "saved-today", "saved-all"):
        assert doc.find(id=ident).text() == "0"
    assert doc.find_all("svg") == []  # an empty ledger draws no chart
    assert "No hits or upstream calls" in doc.find("figure", cls="chart").text()

    today = dt.datetime.now(dt.UTC).date().isoformat()
    coordinator = client.app.state.backends.coordinator  # type: ignore[attr-defined]
    await coordinator.add_counts({
        "credits_spent": 12.5, f"credits_spent:{today}": 9,
        "credits_saved": 1500, f"credits_saved:{today}": 15,
        "credits_spent:2000-01-01": 3.5,
    })  # fmt: skip
    doc = await page(client)
    shown = {i: doc.find(id=i).text() for i in ("spent-today", "spent-all", "saved-today",
                                                "saved-all")}  # fmt: skip
    assert shown == {"spent-today": "9", "spent-all": "12.5", "saved-today": "15",
                     "saved-all": "1,500"}  # fmt: skip


@pytest.mark.anyio
async def test_the_chart_draws_hits_and_calls_per_day_from_the_ledger(
    client: httpx.AsyncClient,
) -> None:
    now = dt.datetime.now(dt.UTC)
    yesterday = (now - dt.timedelta(days=1)).timestamp()

    def record(kind: str, when: float) -> LedgerRecord:
        return LedgerRecord(when, kind, "v1/text-to-image", "sdxl", "k" * 64, 200, 1, 2.0)  # type: ignore[arg-type]

    coordinator = client.app.state.backends.coordinator  # type: ignore[attr-defined]
    await coordinator.append_ledger(
        [record("call", yesterday)] * 3 + [record("hit", yesterday)] * 6
        + [record("hit", now.timestamp())] * 2
        + [record("call", (now - dt.timedelta(days=40)).timestamp())]  # outside the chart
    )  # fmt: skip
    svg = (await page(client)).find("svg", id="day-chart")
    bars = {r.find("title").text(): r for r in svg.find_all("rect")}
    day, today = (now - dt.timedelta(days=1)).date().isoformat(), now.date().isoformat()
    assert set(bars) == {f"{day}: 3 upstream calls", f"{day}: 6 hits", f"{today}: 2 hits"}
    heights = {label: float(r.attrs["height"]) for label, r in bars.items()}
    assert heights[f"{day}: 6 hits"] == pytest.approx(2 * heights[f"{day}: 3 upstream calls"])
    assert heights[f"{day}: 6 hits"] == pytest.approx(3 * heights[f"{today}: 2 hits"])
    assert "calls" in bars[f"{day}: 3 upstream calls"].classes


# -- the detail view, download and delete ---------------------------------------------------------


@pytest.mark.anyio
async def test_the_detail_view_shows_the_full_image_and_every_field(
    client: httpx.AsyncClient,
) -> None:
    key = await generate(client, "a detailed owl", 1024, 1024, seed=7, cfg_scale=9)
    meta = (await client.get(f"/cache/entries/{key}")).json()
    doc = await page(client, f"/gallery/entries/{key[:12]}")
    rows = {tr.find("th").text(): tr.find("td").text() for tr in doc.find_all("tr")}
    assert set(meta) <= set(rows)  # every field inspection knows
    assert rows["key"] == key and rows["version"] == meta["version"]
    assert '"cfg_scale": 9' in rows["params"]
    assert rows["credits saved"] == "0"
    image = doc.find("img", cls="full")
    full = await client.get(image.attrs["src"])
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    assert full.content == (await client.get(f"/cache/entries/{key}/image")).content
    assert Image.open(io.BytesIO(full.content)).size == (1024, 1024)
    assert "immutable" in full.headers["cache-control"]
    download = doc.find("a", cls="download")
    saved = await client.get(download.attrs["href"])
    assert saved.content == full.content
    assert saved.headers["content-disposition"] == f'attachment; filename="{key[:16]}-0.png"'
    assert (await client.get(f"/gallery/entries/{'f' * 64}", headers=HTML)).status_code == 404


@pytest.mark.anyio
async def test_delete_removes_the_entry_and_returns_to_the_search(
    client: httpx.AsyncClient,
) -> None:
    keep = await generate(client, "keep me")
    doomed = await generate(client, "delete me")
    grid = await page(client, q="me")
    link = next(li for li in grid.find_all("li", cls="card") if li.attrs["data-key"] == doomed)
    detail = await page(client, link.find("a").attrs["href"])
    form = detail.find("form", cls="delete")
    assert form.attrs["method"] == "post" and "data-confirm" in form.attrs
    back = form.find("input", name="back").attrs["value"]
    assert back == "/gallery?q=me"
    response = await client.post(form.attrs["action"], data={"back": back}, headers=SAME_ORIGIN)
    assert response.status_code == 303
    assert response.headers["location"] == f"/gallery?q=me&deleted={doomed[:16]}"
    assert (await client.get(f"/cache/entries/{doomed}")).status_code == 404
    after = await page(client, response.headers["location"])
    assert [c["key"] for c in cards(after)] == [keep]
    assert doomed[:16] in after.find(id="deleted-note").text()
    again = await client.post(form.attrs["action"], headers=SAME_ORIGIN)
    assert again.status_code == 404


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Referer": "http://evil.example/page"},
        {},  # says nothing of where it came from
    ],
)
async def test_a_delete_not_sent_from_the_gallery_is_refused(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    key = await generate(client, "stay")
    response = await client.post(f"/gallery/entries/{key}/delete", headers={**HTML, **headers})
    assert response.status_code == 403
    assert "cross_origin" in response.text
    assert (await client.get(f"/cache/entries/{key}")).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers", [{"Sec-Fetch-Site": "same-origin"}, {"Referer": f"{LOCAL}/gallery/entries/x"}]
)
async def test_a_delete_from_the_gallery_without_origin_is_judged_by_the_other_headers(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    key = await generate(client, "go")
    response = await client.post(f"/gallery/entries/{key}/delete", headers=headers)
    assert response.status_code == 303
    assert (await client.get(f"/cache/entries/{key}")).status_code == 404


@pytest.mark.anyio
async def test_a_malformed_form_is_a_400_page_not_a_crash(
    client: httpx.AsyncClient, guarded: Settings
) -> None:
    key = await generate(client, "formless")
    fields = "&".join(f"f{i}=x" for i in range(20))  # more fields than a form here has
    headers = {**HTML, **SAME_ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post(f"/gallery/entries/{key}/delete", content=fields,
                                 headers=headers)  # fmt: skip
    assert response.status_code == 400 and "bad_request" in response.text
    assert (await client.get(f"/cache/entries/{key}")).status_code == 200
    async with app_client(guarded, base_url=LOCAL) as c:
        login = await c.post("/gallery/login", content=fields, headers=headers)
        assert login.status_code == 400 and "set-cookie" not in login.headers


@pytest.mark.anyio
async def test_open_mode_answers_only_to_loopback_host_names(offline: Settings) -> None:
    for base in ("http://localhost:8080", "http://127.0.0.2", "http://[::1]:8080"):
        async with app_client(offline, base_url=base) as c:
            assert (await c.get("/gallery", headers=HTML)).status_code == 200
    async with app_client(offline, base_url="http://rebound.example:8080") as c:
        refused = await c.get("/gallery", headers=HTML)
        assert refused.status_code == 403
        assert "STABILITY_GATEWAY_ADMIN_TOKEN" in parse(refused.text).text()
        thumb = await c.get(f"/gallery/thumbs/{'a' * 64}/{'b' * 64}")
        assert thumb.status_code == 403 and thumb.json()["name"] == "forbidden_host"


# -- thumbnails ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_thumbnail_is_small_made_once_and_kept_on_disk(
    offline: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    real_render = thumbs.render

    def render(data: bytes, px: int, image_format: str) -> bytes:
        made.append(len(data))
        return real_render(data, px, image_format)

    monkeypatch.setattr(thumbs, "render", render)
    async with app_client(offline, base_url=LOCAL) as c:
        key = await generate(c, "thumbnail me", 1344, 768)
        url = cards(await page(c))[0]["thumb"]
        full = (await c.get(f"/cache/entries/{key}/image")).content
        first = await c.get(url)
        assert first.status_code == 200
        assert first.headers["content-type"] == "image/webp"
        assert first.headers["cache-control"] == "private, max-age=31536000, immutable"
        thumb = Image.open(io.BytesIO(first.content))
        assert thumb.format == "WEBP"
        assert thumb.size == (THUMB_PX, round(768 * THUMB_PX / 1344))
        assert len(first.content) < len(full) / 4
        again = await c.get(url)
        assert again.content == first.content
        unchanged = await c.get(url, headers={"If-None-Match": first.headers["etag"]})
        assert unchanged.status_code == 304 and unchanged.content == b""
        assert made == [len(full)]  # made once, from the full image
    async with app_client(offline, base_url=LOCAL) as c:  # a new process' memory: the disk
        restarted = await c.get(url)
        assert restarted.content == first.content
        assert made == [len(full)]
    assert any((Path(offline.cache.dir) / "thumbs").iterdir())


@pytest.mark.anyio
async def test_no_thumbnail_or_image_for_a_digest_the_entry_does_not_hold(
    client: httpx.AsyncClient,
) -> None:
    key = await generate(client, "mine")
    other = await generate(client, "yours")
    url = next(c["thumb"] for c in cards(await page(client)) if c["key"] == key)
    sha = url.rsplit("/", 1)[1]
    assert (await client.get(url)).status_code == 200
    for bad in (
        f"/gallery/thumbs/{other}/{sha}",
        f"/gallery/images/{other}/{sha}",
        f"/gallery/thumbs/{key}/{'0' * 64}",
        f"/gallery/thumbs/{key}/not-a-digest",
    ):
        response = await client.get(bad)
        assert response.status_code == 404, bad
        assert set(response.json()) == {"id", "name", "message"}
    await client.delete(f"/cache/entries/{key}")
    assert (await client.get(url)).status_code == 404  # its thumbnail is still cached: not shown


# -- the admin token ------------------------------------------------------------------------------


@pytest.fixture
def guarded(offline: Settings) -> Settings:
    return offline.replace(admin={"token": TOKEN})


@pytest.mark.anyio
async def test_with_a_token_the_gallery_asks_for_it_once_and_keeps_a_cookie(
    guarded: Settings,
) -> None:
    async with app_client(guarded, base_url=LOCAL) as c:
        key = await generate(c, "secret picture")
        meta = await c.get(f"/cache/entries/{key}", headers={"Authorization": f"Bearer {TOKEN}"})
        sha = meta.json()["artifacts"][0]["sha256"]
        closed = [
            await c.get(f"/gallery/thumbs/{key}/{sha}"),
            await c.get(f"/gallery/images/{key}/{sha}"),
            await c.post(f"/gallery/entries/{key}/delete", headers=SAME_ORIGIN),
        ]
        assert [r.status_code for r in closed] == [401, 401, 401]
        assert all(r.json()["name"] == "unauthorized" for r in closed)

        asked = await c.get("/gallery?q=secret", headers=HTML)
        assert asked.status_code == 303
        assert asked.headers["location"] == "/gallery/login?next=%2Fgallery%3Fq%3Dsecret"
        login = await page(c, asked.headers["location"])
        form = login.find("form", id="login-form")
        assert form.attrs["method"] == "post" and form.attrs["action"] == "/gallery/login"
        assert login.find("input", name="token").attrs["type"] == "password"
        target = login.find("input", name="next").attrs["value"]

        wrong = await c.post("/gallery/login", data={"token": "guess", "next": target},
                             headers={**HTML, **SAME_ORIGIN})  # fmt: skip
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        assert "not the admin token" in parse(wrong.text).text()
        forged = await c.post("/gallery/login", data={"token": TOKEN, "next": target},
                              headers={"Origin": "http://evil.example"})  # fmt: skip
        assert forged.status_code == 403 and "set-cookie" not in forged.headers

        good = await c.post("/gallery/login", data={"token": TOKEN, "next": target},
                            headers=SAME_ORIGIN)  # fmt: skip
        assert good.status_code == 303 and good.headers["location"] == "/gallery?q=secret"
        cookie = good.headers["set-cookie"]
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower() and "path=/gallery" in cookie.lower()
        assert TOKEN not in cookie

        shown = await page(c, "/gallery", q="secret")
        assert [x["key"] for x in cards(shown)] == [key]
        assert shown.find("form", cls="logout")
        assert (await c.get(f"/gallery/thumbs/{key}/{sha}")).status_code == 200
        assert (await c.get(f"/gallery/images/{key}/{sha}")).status_code == 200

        out = await c.post("/gallery/logout", headers=SAME_ORIGIN)
        assert (
            out.status_code == 303 and 'stability_gateway_gallery=""' in out.headers["set-cookie"]
        )
        assert (await c.get("/gallery", headers=HTML)).status_code == 303
        assert (await c.get(f"/gallery/thumbs/{key}/{sha}")).status_code == 401


@pytest.mark.anyio
async def test_with_a_token_scripts_may_send_it_as_a_bearer_and_bad_cookies_fail(
    guarded: Settings,
) -> None:
    async with app_client(guarded, base_url=LOCAL) as c:
        bearer = await c.get("/gallery", headers={**HTML, "Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        for value in (TOKEN, "v1.1.abc", "v1.99999999999.x", "nonsense"):
            c.cookies.set("stability_gateway_gallery", value, path="/gallery")
            assert (await c.get("/gallery", headers=HTML)).status_code == 303, value
        # A session is tied to the token that made it (see test_gallery_units for expiry).
        async with app_client(
            guarded.replace(admin={"token": "another-token"}), base_url=LOCAL
        ) as o:
            good = await c.post("/gallery/login", data={"token": TOKEN}, headers=SAME_ORIGIN)
            o.cookies = good.cookies
            assert (await o.get("/gallery", headers=HTML)).status_code == 303


@pytest.mark.anyio
async def test_login_redirects_only_within_the_gallery(guarded: Settings) -> None:
    async with app_client(guarded, base_url=LOCAL) as c:
        for target in ("https://evil.example/", "//evil.example/gallery", "/cache/stats",
                       "/gallery\\@evil.example", "/galleryx"):  # fmt: skip
            r = await c.post("/gallery/login", data={"token": TOKEN, "next": target},
                             headers=SAME_ORIGIN)  # fmt: skip
            assert r.headers["location"] == "/gallery", target
        for r in (await c.get("/gallery/login?next=https://evil.example"),):
            assert "https://evil.example" not in r.text


@pytest.mark.anyio
async def test_exposed_without_a_token_the_gallery_is_closed_like_the_inspection_api(
    offline: Settings,
) -> None:
    exposed = offline.replace(gateway={"host": "0.0.0.0"})
    async with app_client(exposed, base_url=LOCAL) as c:
        key = await generate(c, "hidden")
        doc_page = await c.get("/gallery", headers=HTML)
        assert doc_page.status_code == 401
        assert "set STABILITY_GATEWAY_ADMIN_TOKEN" in parse(doc_page.text).text()
        assert doc_page.headers["content-type"].startswith("text/html")
        for url in (f"/gallery/entries/{key}", f"/gallery/thumbs/{key}/{'a' * 64}",
                    f"/gallery/images/{key}/{'a' * 64}"):  # fmt: skip
            r = await c.get(url)
            assert r.status_code == 401
            body = r.json()
            assert set(body) == {"id", "name", "message"} and body["name"] == "unauthorized"
            assert "STABILITY_GATEWAY_ADMIN_TOKEN" in body["message"]
        login = await c.get("/gallery/login", headers=HTML)  # no token: nothing to log in to
        assert login.status_code == 303
        assert (await c.get(login.headers["location"], headers=HTML)).status_code == 401


@pytest.mark.anyio
async def test_the_static_files_are_served_and_pages_are_not_cached(
    client: httpx.AsyncClient,
) -> None:
    doc = await page(client)
    css = doc.find("link", rel="stylesheet").attrs["href"]
    js = doc.find("script").attrs["src"]
    for url, kind in ((css, "text/css"), (js, "javascript")):
        r = await client.get(url)
        assert r.status_code == 200 and kind in r.headers["content-type"]
    response = await client.get("/gallery", headers=HTML)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert re.search(r"frame-ancestors 'none'", response.headers["content-security-policy"])
