"""The memo of parsed requests: repeated bytes are not parsed again, and nothing else is
shared between requests because of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.requests import Request

from gateway.config import Settings
from gateway.errors import BadRequest
from gateway.generation import Generation, UpstreamRequest
from gateway.parse_memo import ParseMemo
from gateway.routes.text_to_image import TextToImage
from tests.support.app import app_client
from tests.test_app import PATH, Upstream

ENGINE = "stable-diffusion-xl-1024-v1-0"


def request(body: bytes, headers: Mapping[str, str] | None = None, path: str = PATH) -> Request:
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        assert not given, "the body was asked for twice"
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http", "method": "POST", "path": path, "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "path_params": {"engine_id": ENGINE},
    }  # fmt: skip
    return Request(scope, receive)


class Counting:
    """A route whose parse counts its calls and refuses bodies saying "bad"."""

    v2 = False
    memo_headers: tuple[str, ...] | None = ("accept",)

    def __init__(self) -> None:
        self.parsed = 0

    async def parse(self, request: Request) -> Generation:
        self.parsed += 1
        body = await request.body()
        if b"bad" in body:
            raise BadRequest("bad body")
        want = "image" if request.headers.get("accept") == "image/png" else "json"
        return Generation(route="r", engine="e", key=body.hex(),
                          upstream=UpstreamRequest("POST", "/x"), want=want,  # type: ignore[arg-type]
                          expected_size=None)  # fmt: skip


@pytest.mark.anyio
async def test_the_same_bytes_are_parsed_once() -> None:
    memo, route = ParseMemo(), Counting()
    first = await memo.parse(route, request(b"one"))  # type: ignore[arg-type]
    again = await memo.parse(route, request(b"one"))  # type: ignore[arg-type]
    assert route.parsed == 1 and again is first


@pytest.mark.anyio
async def test_a_different_body_path_or_named_header_is_parsed_anew() -> None:
    memo, route = ParseMemo(), Counting()
    json_one = await memo.parse(route, request(b"one"))  # type: ignore[arg-type]
    png_one = await memo.parse(route, request(b"one", {"Accept": "image/png"}))  # type: ignore[arg-type]
    await memo.parse(route, request(b"two"))  # type: ignore[arg-type]
    await memo.parse(route, request(b"one", path="/v1/other"))  # type: ignore[arg-type]
    assert route.parsed == 4
    assert (json_one.want, png_one.want) == ("json", "image")
    # A header the route does not read does not matter.
    await memo.parse(route, request(b"one", {"X-Cache-Namespace": "a"}))  # type: ignore[arg-type]
    assert route.parsed == 4


@pytest.mark.anyio
async def test_a_refused_request_is_refused_every_time() -> None:
    memo, route = ParseMemo(), Counting()
    for _ in range(2):
        with pytest.raises(BadRequest):
            await memo.parse(route, request(b"bad"))  # type: ignore[arg-type]
    assert route.parsed == 2


@pytest.mark.anyio
async def test_routes_that_do_not_opt_in_and_large_bodies_are_always_parsed() -> None:
    route = Counting()
    route.memo_headers = None
    memo = ParseMemo()
    for _ in range(2):
        await memo.parse(route, request(b"one"))  # type: ignore[arg-type]
    assert route.parsed == 2
    small = ParseMemo(max_body=8)
    opted = Counting()
    for _ in range(2):
        await small.parse(opted, request(b"x" * 9))  # type: ignore[arg-type]
    assert opted.parsed == 2


@pytest.mark.anyio
async def test_the_memo_keeps_at_most_its_size_dropping_the_least_recent() -> None:
    memo, route = ParseMemo(entries=2), Counting()
    for body in (b"a", b"b", b"a", b"c"):  # "a" used again, so "b" is the least recent
        await memo.parse(route, request(body))  # type: ignore[arg-type]
    assert route.parsed == 3
    await memo.parse(route, request(b"a"))  # type: ignore[arg-type]
    assert route.parsed == 3
    await memo.parse(route, request(b"b"))  # type: ignore[arg-type]
    assert route.parsed == 4


class Recording(Headers):
    """Headers that note every name looked up."""

    read: set[str]

    def __getitem__(self, key: str) -> str:
        self.read.add(key.lower())
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key.lower())
        return super().get(key, default)

    def __contains__(self, key: Any) -> bool:
        self.read.add(str(key).lower())
        return super().__contains__(key)


@pytest.mark.anyio
@pytest.mark.parametrize("accept", ["image/png", "application/json", ""])
async def test_text_to_image_reads_no_header_but_those_it_names(
    settings: Settings, accept: str
) -> None:
    """The memo is sound only if `memo_headers` lists every header the parse reads."""
    body = b'{"text_prompts": [{"text": "a lake"}], "seed": 5}'
    sent = {"Accept": accept, "Content-Type": "application/json", "X-Cache-TTL": "60",
            "Cache-Control": "no-cache", "X-Cache-Namespace": "a", "User-Agent": "t"}  # fmt: skip
    req = request(body, {k: v for k, v in sent.items() if v})
    recording = Recording(scope=req.scope)
    recording.read = set()
    req._headers = recording  # starlette's Request.headers returns this once it is set

    class App:
        class state:  # what `request.app.state` looks like
            pass

    App.state.settings = settings  # type: ignore[attr-defined]
    req.scope["app"] = App
    await TextToImage(settings.defaults).parse(req)
    assert recording.read <= set(TextToImage.memo_headers)


@pytest.mark.anyio
async def test_through_the_app_a_repeated_request_is_answered_as_before(
    settings: Settings,
) -> None:
    """Hits of the same bytes, in either format and in another namespace, as without a memo."""
    upstream = Upstream()
    payload = {"text_prompts": [{"text": "memo"}], "width": 1024, "height": 1024, "seed": 3}
    async with app_client(settings, upstream) as client:
        first = await client.post(PATH, json=payload)
        png = await client.post(PATH, json=payload, headers={"Accept": "image/png"})
        json_again = await client.post(PATH, json=payload)
        elsewhere = await client.post(PATH, json=payload, headers={"X-Cache-Namespace": "b"})
    assert first.headers["x-cache"] == "MISS" and len(upstream.calls) == 2
    assert png.headers["x-cache"] == "HIT" and png.headers["content-type"] == "image/png"
    assert json_again.headers["x-cache"] == "HIT" and json_again.content == first.content
    assert elsewhere.headers["x-cache"] == "MISS"
    assert elsewhere.headers["x-cache-key"] != first.headers["x-cache-key"]
