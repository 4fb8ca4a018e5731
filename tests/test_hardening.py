"""Inputs and upstream answers that once crashed or misled the gateway: each must give a
clear Stability-shaped answer and leave the cache and the shared state sound."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from PIL import Image

from cache.local import LocalCoordinator
from gateway.config import Settings
from gateway.singleflight import SingleFlight
from tests.support.app import app_client, ask
from tests.support.errors import stability_error

V1 = "/v1/generation/stable-diffusion-v1-6/text-to-image"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


class Upstream:
    def __init__(self, answer: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.calls: list[httpx.Request] = []
        self.answer = answer

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        if self.answer is not None:
            return self.answer(request)
        body = json.loads(request.content)
        image = base64.b64encode(png(body.get("width", 512), body.get("height", 512))).decode()
        artifact = {"base64": image, "seed": 7, "finishReason": "SUCCESS"}
        return httpx.Response(200, json={"artifacts": [artifact] * body.get("samples", 1)})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, upstream) as c:
        yield c


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        b'{"text_prompts":[{"text":"a"}],"cfg_scale":NaN}',
        b'{"text_prompts":[{"text":"a","weight":Infinity}]}',
        b'{"text_prompts":[{"text":"a"}],"extras":{"x":-Infinity}}',
        b'{"text_prompts":[{"text":"a\\ud800"}]}',
        b'{"text_prompts":[{"text":"a"}],"seed":' + b"1" * 5000 + b"}",
        b'{"text_prompts":[{"text":"a"}],"width":6400000000,"height":512}',
        b'{"text_prompts":[{"text":"a"}],"width":1e20,"height":512}',
    ],
    ids=["nan", "inf-weight", "inf-extras", "surrogate", "5000-digits", "huge-width", "1e20"],
)
async def test_malformed_numbers_and_text_are_400s(client, upstream, content: bytes) -> None:
    response = await client.post(V1, content=content, headers={"content-type": "application/json"})
    stability_error(response, 400)
    assert upstream.calls == []


@pytest.mark.anyio
async def test_multipart_numbers_too_long_for_int_are_400s(client, upstream) -> None:
    response = await client.post(
        "/v2beta/stable-image/generate/core", data={"prompt": "a", "seed": "1" * 5000}
    )
    stability_error(response, 400, v2=True)
    assert upstream.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize("engine", ["x%3Fy=1%23", "%2E%2E", "a%20b"])
async def test_engine_ids_cannot_reshape_the_upstream_url(client, upstream, engine: str) -> None:
    response = await client.post(
        f"/v1/generation/{engine}/text-to-image", json={"text_prompts": [{"text": "a"}]}
    )
    assert stability_error(response, 400) == "invalid_engine_id"
    assert upstream.calls == []


@pytest.mark.anyio
async def test_non_ascii_forwarded_headers_go_upstream_as_received(client, upstream) -> None:
    response = await client.post(
        V1,
        json={"text_prompts": [{"text": "header"}]},
        headers={"stability-client-id": "caf\xe9".encode("latin-1")},
    )
    assert response.status_code == 200
    raw = dict(upstream.calls[0].headers.raw)
    assert raw[b"stability-client-id"] == "caf\xe9".encode("latin-1")


@pytest.mark.anyio
async def test_fewer_images_than_asked_for_is_502_and_not_cached(settings: Settings) -> None:
    def one_image(request: httpx.Request) -> httpx.Response:
        artifact = {"base64": base64.b64encode(png(512, 512)).decode(), "seed": 1}
        return httpx.Response(200, json={"artifacts": [artifact]})

    upstream = Upstream(one_image)
    payload = {"text_prompts": [{"text": "two please"}], "samples": 2}
    first = await ask(settings, upstream, "POST", V1, json=payload)
    second = await ask(settings, upstream, "POST", V1, json=payload)  # same cache folder
    assert stability_error(first, 502) == "bad_upstream_response"
    assert first.headers["x-cache"] == "MISS"
    assert second.status_code == 502 and len(upstream.calls) == 2  # nothing was cached


@pytest.mark.anyio
@pytest.mark.parametrize("body", [b"[1, 2]", b"null", b"<html>oops</html>"])
async def test_odd_upstream_error_bodies_are_passed_through(
    settings: Settings, body: bytes
) -> None:
    upstream = Upstream(lambda r: httpx.Response(400, content=body))
    response = await ask(settings, upstream, "POST", V1, json={"text_prompts": [{"text": "odd"}]})
    assert response.status_code == 400 and response.content == body
    assert response.headers["x-cache"] == "MISS"


@pytest.mark.anyio
async def test_a_corrupt_compressed_body_is_a_502(settings: Settings) -> None:
    upstream = Upstream(
        lambda r: httpx.Response(200, content=b"not gzip", headers={"content-encoding": "gzip"})
    )
    response = await ask(settings, upstream, "POST", V1, json={"text_prompts": [{"text": "gz"}]})
    assert stability_error(response, 502) == "bad_upstream_response"


@pytest.mark.anyio
@pytest.mark.parametrize("retry_after", ["86400", "inf", "nan"])
async def test_retry_after_cannot_freeze_the_gateway(settings: Settings, retry_after: str) -> None:
    settings = settings.replace(retry={"attempts": 1})
    upstream = Upstream(
        lambda r: httpx.Response(
            429, json={"id": "0", "name": "x", "message": "m"}, headers={"retry-after": retry_after}
        )
    )
    async with app_client(settings, upstream) as c:
        await c.post(V1, json={"text_prompts": [{"text": "slow"}]})
        limiter = c.app.state.backends.coordinator.limiter.primary  # type: ignore[attr-defined]
        until = limiter.snapshot().cooldown_until
    assert until - time.time() <= 60  # at most a minute, Stability's own time-out


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v2beta/stable-image/generate/core", 405),
     ("POST", "/v2beta/stable-image/generate/x%2Fy", 400),  # forwarded paths are checked
     ("POST", "/v2beta/stable-image/generate/core", 413)],
)  # fmt: skip
async def test_v2beta_paths_answer_in_the_v2beta_shape(client, method, path, status) -> None:
    content = b"x" * (11 * 1024 * 1024) if status == 413 else None
    response = await client.request(method, path, content=content)
    stability_error(response, status, v2=True)


@pytest.mark.anyio
async def test_a_newcomer_never_joins_a_flight_being_cancelled() -> None:
    flights = SingleFlight()

    async def work(_flight: object) -> str:
        try:
            await asyncio.sleep(60)  # queued for the limiter: nothing sent yet
        finally:
            await asyncio.sleep(0.05)  # winding down, like releasing the lease
        return "image"

    async def quick(_flight: object) -> str:
        return "image"

    leaver = asyncio.ensure_future(flights.run("k", work))
    await asyncio.sleep(0.01)
    leaver.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaver
    assert await flights.run("k", quick) == ("image", "led")


@pytest.mark.anyio
async def test_a_lease_is_released_only_by_its_holder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    coordinator = LocalCoordinator(tmp_path, limit=10, period=1)
    assert await coordinator.acquire_lease("k", "first", 0.05)
    await asyncio.sleep(0.1)  # the first holder outlived its lease
    assert await coordinator.acquire_lease("k", "second", 60)
    await coordinator.release_lease("k", "first")  # late: must not remove the second's lease
    assert coordinator.holder("k") == "second"
    await coordinator.release_lease("k", "second")
    assert coordinator.holder("k") is None
    await coordinator.close()
