"""Any other /v1, /v2beta or /v2 path, in process (create_app + httpx.MockTransport):
forwarded as sent, answered as Stability answered, retried, never cached; path tricks
refused; offline and replay say so."""

from __future__ import annotations

import gzip
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway.config import Settings
from tests.support.app import app_client
from tests.support.errors import stability_error

SECRET = "sk-test-SECRET-key-123456"  # the conftest settings' key
FAST_3D = "/v2beta/3d/stable-fast-3d"
GLB = b"glTF\x02\x00\x00\x00" + bytes(range(256)) * 16  # binary, every byte value
Answer = Callable[[httpx.Request], httpx.Response]


class Chunks(httpx.AsyncByteStream):
    """A body that arrives in pieces, as from a socket (httpx reads a plain `content=`
    answer at once, which the gateway would see as an answer already read)."""

    def __init__(self, data: bytes, size: int = 1000) -> None:
        self.pieces = [data[at : at + size] for at in range(0, len(data), size)]

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


def streamed(status: int, data: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=Chunks(data))


class Upstream:
    """Records every request (with its body); answers from `script`, then with `default`."""

    def __init__(self) -> None:
        self.calls: list[httpx.Request] = []
        self.script: deque[Answer] = deque()
        self.default: Answer = lambda request: streamed(
            200, GLB, {"content-type": "model/gltf-binary"}
        )

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.calls.append(request)
        return (self.script.popleft() if self.script else self.default)(request)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, upstream) as c:
        yield c


def raw(path: bytes) -> httpx.URL:
    """A URL whose path goes out exactly as written (httpx would normalise `..` in a str)."""
    return httpx.URL("http://gw").copy_with(raw_path=path)


@pytest.mark.anyio
async def test_a_binary_request_and_answer_pass_byte_for_byte_with_their_headers(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    sent = b"\x89PNG\r\n\x1a\n\x00\xff" + bytes(range(256))
    answered = {
        "content-type": "model/gltf-binary",
        "content-disposition": 'attachment; filename="model.glb"',
        "x-request-id": "req-7f3a",
        "finish-reason": "SUCCESS",
        "seed": "1234",
        "x-custom-upstream": "kept",
    }
    upstream.default = lambda request: streamed(
        201, GLB, {**answered, "content-length": str(len(GLB)), "keep-alive": "x"}
    )
    response = await client.post(
        f"{FAST_3D}?texture_resolution=1024&x=a%2Fb|c",
        content=sent,
        headers={
            "Content-Type": "application/octet-stream",
            "Accept": "model/gltf-binary",
            "Authorization": "Bearer sk-caller-not-used",
            "Stability-Client-ID": "video-team",
            "Organization": "org-123",
            "X-Not-Forwarded": "private",
        },
    )
    assert response.status_code == 201
    assert response.content == GLB
    assert {k: response.headers[k] for k in answered} == answered
    assert response.headers["x-cache"] == "BYPASS"
    assert response.headers["content-length"] == str(len(GLB))
    assert "keep-alive" not in response.headers
    (call,) = upstream.calls
    assert (call.method, call.url.raw_path) == (
        "POST",
        b"/v2beta/3d/stable-fast-3d?texture_resolution=1024&x=a%2Fb|c",
    )
    assert call.content == sent
    assert call.headers["content-type"] == "application/octet-stream"
    assert call.headers["accept"] == "model/gltf-binary"
    assert call.headers["authorization"] == f"Bearer {SECRET}"  # the gateway's own key
    assert (call.headers["stability-client-id"], call.headers["organization"]) == (
        "video-team",
        "org-123",
    )
    assert "x-not-forwarded" not in call.headers


@pytest.mark.anyio
async def test_any_method_goes_through_and_a_bodiless_request_stays_bodiless(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.default = lambda request: httpx.Response(
        404, json={"id": "e" * 32, "name": "not_found", "errors": ["no such job"]}
    )
    del client.headers["accept"]  # a caller that sends no Accept: none goes upstream either
    for method in ("GET", "DELETE", "PUT", "PATCH", "OPTIONS"):
        response = await client.request(method, "/v2/video/jobs/abc-123")
        assert response.status_code == 404
        assert response.json()["errors"] == ["no such job"]
    assert [c.method for c in upstream.calls] == ["GET", "DELETE", "PUT", "PATCH", "OPTIONS"]
    get = upstream.calls[0]
    assert "accept" not in get.headers
    assert "content-length" not in get.headers and get.content == b""


@pytest.mark.anyio
async def test_without_a_gateway_key_the_callers_authorization_goes_upstream(
    settings: Settings, upstream: Upstream
) -> None:
    async with app_client(settings.replace(api_key=""), upstream) as keyless:
        await keyless.post("/v1/some/new-route", json={"a": 1},
                           headers={"Authorization": "Bearer sk-alice"})  # fmt: skip
    (call,) = upstream.calls
    assert call.headers["authorization"] == "Bearer sk-alice"
    assert (call.headers["content-type"], call.content) == ("application/json", b'{"a":1}')


@pytest.mark.anyio
async def test_never_cached_the_same_request_twice_is_two_upstream_calls(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    answers = [await client.post(FAST_3D, content=b"same image") for _ in range(2)]
    assert [a.headers["x-cache"] for a in answers] == ["BYPASS", "BYPASS"]
    assert all(a.content == GLB for a in answers)
    assert len(upstream.calls) == 2


@pytest.mark.anyio
async def test_429_then_200_is_retried_and_recorded_as_free_calls(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    slow_down = b'{"id": "a", "name": "rate_limit_exceeded", "errors": ["slow down"]}'
    upstream.script.append(lambda request: streamed(429, slow_down, {"Retry-After": "0"}))
    response = await client.post(FAST_3D, content=b"image")
    assert (response.status_code, response.content) == (200, GLB)
    assert [c.content for c in upstream.calls] == [b"image", b"image"]
    ledger = (await client.get("/cache/ledger", params={"kind": "call"})).json()
    records = [(r["route"], r["status"], r["credits"]) for r in ledger["records"]]
    assert sorted(records) == [("v2beta/*", 200, 0), ("v2beta/*", 429, 0)]


@pytest.mark.anyio
async def test_a_5xx_to_the_last_attempt_is_passed_on_and_a_400_is_not_retried(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    body = {"id": "b" * 32, "name": "server_error", "errors": ["down"]}
    upstream.default = lambda request: streamed(
        503, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    failed = await client.get("/v2beta/audio/anything")
    assert (failed.status_code, failed.json()) == (503, body)
    assert failed.headers["content-length"] == str(len(failed.content))
    assert len(upstream.calls) == 3  # the configured attempts
    refused = {"id": "c" * 32, "name": "bad_request", "errors": ["prompt: required"]}
    upstream.default = lambda request: httpx.Response(400, json=refused)
    assert (await client.post("/v2beta/audio/x", content=b"{}")).json() == refused
    assert len(upstream.calls) == 4


@pytest.mark.anyio
async def test_a_compressed_answer_the_caller_asked_for_passes_compressed(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    packed = gzip.compress(b'{"status": "done"}')
    upstream.default = lambda request: streamed(
        200, packed, {"content-encoding": "gzip", "content-type": "application/json"}
    )
    async with client.stream("GET", "/v1/x", headers={"Accept-Encoding": "gzip"}) as response:
        sent = b"".join([part async for part in response.aiter_raw()])
    assert (sent, response.headers["content-encoding"]) == (packed, "gzip")
    assert upstream.calls[0].headers["accept-encoding"] == "gzip"


@pytest.mark.anyio
async def test_an_unreachable_upstream_is_a_503_in_stabilitys_shape(
    settings: Settings,
) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with app_client(settings, down) as c:
        response = await c.post(FAST_3D, content=b"x")
    assert stability_error(response, 503, v2=True) == "upstream_unavailable"


TRICKS = [
    b"/v2beta/%2e%2e/v1/user/balance",  # encoded dot segment
    b"/v2beta/3d/%2E/x",
    b"/v2beta/3d/a%2Fb",  # encoded slash
    b"/v2beta/3d/a%2fb",
    b"/v2beta/3d/a%5Cb",  # encoded backslash
    b"/v1//attacker.example/x",  # empty segment: a network-path reference upstream
    b"/v2beta/3d/x%00y",  # control character
    b"/v2beta/3d/x%zz",  # not a percent escape
    b"/v2/" + b"a" * 3000,  # too long
]


@pytest.mark.anyio
@pytest.mark.parametrize("path", TRICKS, ids=lambda p: p[:32].decode())
async def test_path_tricks_are_refused_before_any_upstream_call(
    client: httpx.AsyncClient, upstream: Upstream, path: bytes
) -> None:
    response = await client.get(raw(path))
    v2 = not path.startswith(b"/v1/")
    assert stability_error(response, 400, v2=v2) == "invalid_path"
    assert upstream.calls == []


@pytest.mark.anyio
async def test_a_bad_query_is_refused_and_a_trailing_slash_is_not(
    client: httpx.AsyncClient, upstream: Upstream
) -> None:
    bad = await client.get(raw(b"/v2beta/3d/x?a=%zz"))
    assert stability_error(bad, 400, v2=True) == "invalid_path"
    assert upstream.calls == []
    ok = await client.get(raw(b"/v2beta/3d/x/?a=%20b"))
    assert ok.status_code == 200
    assert upstream.calls[0].url.raw_path == b"/v2beta/3d/x/?a=%20b"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["offline", "replay"])
async def test_offline_and_replay_answer_503_offline_mode(
    settings: Settings, upstream: Upstream, mode: str, tmp_path: Path
) -> None:
    async with app_client(settings.replace(gateway={"mode": mode}), upstream) as c:
        v2 = await c.post(FAST_3D, content=b"x")
        v1 = await c.get("/v1/some/future/route")
        trick = await c.get(raw(b"/v2beta/%2e%2e/x"))
    assert stability_error(v2, 503, v2=True) == "offline_mode"
    assert stability_error(v1, 503) == "offline_mode"
    assert stability_error(trick, 400, v2=True) == "invalid_path"
    assert upstream.calls == []
