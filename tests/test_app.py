"""The app factory with a fake upstream transport: the whole pipeline, in process."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import pytest
from PIL import Image

from gateway.config import Settings
from tests.support.app import app_client

PATH = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


class Upstream:
    """An httpx.MockTransport handler that counts calls and can be slowed down."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[httpx.Request] = []
        self.delay = delay

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        await asyncio.sleep(self.delay)
        body = json.loads(request.content)
        image = base64.b64encode(png(body["width"], body["height"])).decode()
        artifact = {"base64": image, "seed": 99, "finishReason": "SUCCESS"}
        return httpx.Response(200, json={"artifacts": [artifact]})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream(delay=0.05)


@pytest.fixture
async def client(settings: Settings, upstream: Upstream):  # type: ignore[no-untyped-def]
    async with app_client(settings, upstream) as c:
        yield c


@pytest.mark.anyio
async def test_identical_concurrent_requests_share_one_upstream_call(client, upstream) -> None:
    payload = {"text_prompts": [{"text": "shared"}], "width": 1024, "height": 1024}
    answers = await asyncio.gather(*(client.post(PATH, json=payload) for _ in range(20)))
    assert {r.status_code for r in answers} == {200}
    assert len({r.content for r in answers}) == 1
    assert len(upstream.calls) == 1
    hit = await client.post(PATH, json=payload)
    assert hit.headers["x-cache"] == "HIT" and len(upstream.calls) == 1


@pytest.mark.anyio
async def test_upstream_receives_the_filled_in_request(client, upstream) -> None:
    await client.post(PATH, json={"text_prompts": [{"text": "filled"}]})
    sent = json.loads(upstream.calls[0].content)
    assert (sent["width"], sent["height"], sent["cfg_scale"], sent["steps"]) == (1024, 1024, 7, 30)
    assert upstream.calls[0].headers["authorization"].startswith("Bearer sk-test-")


@pytest.mark.anyio
async def test_without_a_gateway_key_a_bad_credential_is_not_shared(settings: Settings) -> None:
    """Callers forwarding their own keys share the cache, but never another caller's 401."""
    import dataclasses

    class Checking(Upstream):
        async def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.headers.get("authorization") != "Bearer good":
                self.calls.append(request)
                await asyncio.sleep(self.delay)
                return httpx.Response(401, json={"id": "0" * 32, "name": "unauthorized",
                                                 "message": "bad key"})  # fmt: skip
            return await super().__call__(request)

    upstream = Checking(delay=0.05)
    keyless = dataclasses.replace(settings, api_key="")
    payload = {"text_prompts": [{"text": "per caller"}], "width": 1024, "height": 1024}
    credentials = ["Bearer bad", "Bearer good"] * 3
    async with app_client(keyless, upstream) as c:
        answers = await asyncio.gather(
            *(c.post(PATH, json=payload, headers={"Authorization": a}) for a in credentials)
        )
    by_credential = {(a, r.status_code) for a, r in zip(credentials, answers, strict=True)}
    assert ("Bearer good", 401) not in by_credential
    assert ("Bearer good", 200) in by_credential
