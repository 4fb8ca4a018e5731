"""The fetch path and its seams, in process: outcomes, counting, credentials, jobs across a
restart, the gateway's own 429 covered by a fallback, Retry-After dates, body limits."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import io
import json
import os
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from cache.interfaces import CoordinationError
from cache.local import LocalCoordinator, LocalEntryStore
from cache.model import ImageFile
from gateway import counters as counters_module
from gateway.app import create_app
from gateway.config import Settings
from gateway.counters import Counters
from gateway.http.zerocopy import EXTENSION
from gateway.routes.passthrough import AccountPassThrough
from gateway.upstream import retry_after_seconds
from tests.support.app import app_client
from tests.support.errors import stability_error
from tests.support.images import b64, image, png

pytestmark = pytest.mark.anyio
T2I = "/v1/generation/stable-diffusion-v1-6/text-to-image"
CREATIVE = "/v2beta/stable-image/upscale/creative"


class Upstream:
    """Answers like Stability: v1 images, account checks by credential, and a job route."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[httpx.Request] = []
        self.delay = delay
        self.good = {"Bearer good", "Bearer other-good"}
        self.jobs: dict[str, bytes] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        await asyncio.sleep(self.delay)
        auth = request.headers.get("authorization", "")
        path = request.url.path
        if path == "/v1/user/account":
            if auth in self.good or auth.startswith("Bearer sk-test"):
                return httpx.Response(200, json={"id": "user"})
            return httpx.Response(401, json={"id": "0" * 32, "name": "unauthorized",
                                             "message": "bad key"})  # fmt: skip
        if path == "/v1/engines/list":
            return httpx.Response(200, json=[{"id": "e", "who": auth}])
        if path == CREATIVE:
            self.jobs["j" * 64] = image(256, 256, "PNG")
            return httpx.Response(200, json={"id": "j" * 64})
        if path.startswith("/v2beta/results/"):
            data = self.jobs[path.rsplit("/", 1)[1]]
            return httpx.Response(200, json={"image": b64(data), "finish_reason": "SUCCESS",
                                             "seed": 3})  # fmt: skip
        body = json.loads(request.content)
        data = base64.b64encode(png(body["width"], body["height"])).decode()
        artifact = {"base64": data, "seed": 9, "finishReason": "SUCCESS"}
        return httpx.Response(200, json={"artifacts": [artifact]})

    def generations(self) -> list[httpx.Request]:
        return [c for c in self.calls if c.url.path.startswith("/v1/generation/")]


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
async def client(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(settings, upstream) as c:
        yield c


def payload(text: str = "a fox", **extra: object) -> dict[str, object]:
    return {"text_prompts": [{"text": text}], "seed": 5, **extra}


async def test_requests_that_join_a_flight_are_counted_as_coalesced(settings: Settings) -> None:
    upstream = Upstream(delay=0.1)
    async with app_client(settings, upstream) as client:
        answers = await asyncio.gather(*(client.post(T2I, json=payload()) for _ in range(10)))
        assert {a.status_code for a in answers} == {200} and len(upstream.generations()) == 1
        stats = (await client.get("/cache/stats")).json()
    assert (stats["misses"], stats["coalesced"], stats["hits"]) == (1, 9, 0)
    assert stats["upstream_calls"] == 1 and stats["hit_ratio"] == 0.9


async def test_the_gateways_own_429_is_covered_by_a_cached_fallback(
    settings: Settings, upstream: Upstream
) -> None:
    settings = settings.replace(
        rate_limit={"limit": 1, "period_seconds": 60, "max_wait_seconds": 1}
    )
    async with app_client(settings, upstream) as client:
        first = await client.post(T2I, json=payload())
        refused = await client.post(T2I, json=payload(), headers={"Cache-Control": "no-cache"})
        assert stability_error(refused, 429) == "rate_limited" and "retry-after" in refused.headers
        stale = await client.post(
            T2I, json=payload(), headers={"Cache-Control": "no-cache", "X-Allow-Cached": "true"}
        )
    assert stale.status_code == 200 and stale.headers["x-cache"] == "STALE"
    assert stale.json() == first.json() and len(upstream.generations()) == 1


async def test_without_a_gateway_key_hits_go_only_to_credentials_the_upstream_accepted(
    settings: Settings, upstream: Upstream
) -> None:
    keyless = dataclasses.replace(settings, api_key="")
    async with app_client(keyless, upstream) as client:
        made = await client.post(T2I, json=payload(), headers={"Authorization": "Bearer good"})
        assert made.headers["x-cache"] == "MISS"
        nobody = await client.post(T2I, json=payload())
        assert nobody.status_code == 401 and nobody.headers["x-cache"] == "MISS"
        bad = await client.post(T2I, json=payload(), headers={"Authorization": "Bearer bad"})
        assert bad.status_code == 401
        other = await client.post(
            T2I, json=payload(), headers={"Authorization": "Bearer other-good"}
        )
        again = await client.post(
            T2I, json=payload(), headers={"Authorization": "Bearer other-good"}
        )
    assert (other.headers["x-cache"], again.headers["x-cache"]) == ("HIT", "HIT")
    assert len(upstream.generations()) == 1  # nobody paid twice
    checks = [c for c in upstream.calls if c.url.path == "/v1/user/account"]
    assert len(checks) == 3  # nobody, bad, other-good once: then remembered
    assert all(c.headers.get("authorization") != "Bearer good" for c in checks)  # accepted


class ZeroCopyServer:
    """What a server offering ASGI's zero-copy send does, in process: it names the
    extension in the scope and sends the file's bytes (counted) for the message."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.files_sent = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), EXTENSION: {}}}

        async def sending(message: Any) -> None:
            if message["type"] == EXTENSION:
                self.files_sent += 1
                data = os.pread(message["file"].fileno(), message["count"], 0)
                message = {"type": "http.response.body", "body": data}
            await send(message)

        await self.app(scope, receive, sending)


class NoisyUpstream(Upstream):
    """Images large enough to be blob files of their own (not SQLite rows)."""

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.startswith("/v1/generation/"):
            return await super().__call__(request)
        self.calls.append(request)
        noisy = Image.frombytes("L", (512, 512), random.Random(5).randbytes(512 * 512))
        out = io.BytesIO()
        noisy.save(out, "PNG")
        artifact = {"base64": b64(out.getvalue()), "seed": 9, "finishReason": "SUCCESS"}
        return httpx.Response(200, json={"artifacts": [artifact]})


async def test_a_hit_sent_from_its_file_still_checks_the_callers_credential(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a gateway key, a hit the server would send from the blob's file is refused
    like any other to a key the upstream refuses; the file is closed either way."""
    closed: list[str] = []
    monkeypatch.setattr(ImageFile, "close", lambda self: closed.append(self.file.close()))
    keyless = dataclasses.replace(settings, api_key="").replace(cache={"memory_tier_bytes": 1024})
    upstream = NoisyUpstream()
    app = create_app(keyless, transport=httpx.MockTransport(upstream))  # type: ignore[arg-type]
    server = ZeroCopyServer(app)
    good = {"Authorization": "Bearer good", "Accept": "image/png"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(server)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            made = await client.post(T2I, json=payload(), headers=good)
            read = await client.post(T2I, json=payload(), headers=good)  # checks the SHA-256
            assert server.files_sent == 0
            bad = await client.post(
                T2I, json=payload(), headers={**good, "Authorization": "Bearer bad"}
            )
            sent = await client.post(T2I, json=payload(), headers=good)
    assert (made.headers["x-cache"], read.headers["x-cache"]) == ("MISS", "HIT")
    assert bad.status_code == 401 and bad.headers["x-cache"] == "MISS"
    assert sent.headers["x-cache"] == "HIT" and sent.content == made.content
    assert len(made.content) > 40_000 and server.files_sent == 1
    assert len(closed) == 2  # the refused hit's file, and the one sent
    assert len(upstream.generations()) == 1


async def test_a_jobs_result_goes_only_to_the_credential_that_started_it(
    settings: Settings, upstream: Upstream
) -> None:
    keyless = dataclasses.replace(settings, api_key="")
    files = {"image": ("a.png", image(64, 64), "image/png")}
    async with app_client(keyless, upstream) as client:
        started = await client.post(CREATIVE, data={"prompt": "up"}, files=files,
                                    headers={"Authorization": "Bearer good"})  # fmt: skip
        job = started.json()["id"]
        stolen = await client.get(f"/v2beta/results/{job}",
                                  headers={"Authorization": "Bearer other-good"})  # fmt: skip
        mine = await client.get(f"/v2beta/results/{job}", headers={"Authorization": "Bearer good"})
    assert stability_error(stolen, 404, v2=True) == "not_found"
    assert mine.status_code == 200 and mine.headers["x-cache"] == "MISS"


async def test_jobs_survive_a_restart(settings: Settings, upstream: Upstream) -> None:
    files = {"image": ("a.png", image(64, 64), "image/png")}
    async with app_client(settings, upstream) as client:
        job = (await client.post(CREATIVE, data={"prompt": "up"}, files=files)).json()["id"]
    async with app_client(settings, upstream) as client:  # the same cache folder, restarted
        done = await client.get(f"/v2beta/results/{job}", headers={"Accept": "application/json"})
        again = await client.post(CREATIVE, data={"prompt": "up"}, files=files)
    assert done.status_code == 200 and done.headers["x-cache"] == "MISS"
    assert again.headers["x-cache"] == "HIT"  # the result was stored under the request


async def test_a_chunked_body_over_the_limit_is_413(settings: Settings, upstream: Upstream) -> None:
    settings = settings.replace(gateway={"max_body_bytes": 1000})

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text_prompts": [{"text": "'
        for _ in range(50):
            yield b"x" * 100
        yield b'"}]}'

    async with app_client(settings, upstream) as client:
        response = await client.post(T2I, content=chunks(),
                                     headers={"content-type": "application/json"})  # fmt: skip
    assert "content-length" not in response.request.headers  # it really was chunked
    assert stability_error(response, 413) == "payload_too_large" and not upstream.calls


async def test_the_engines_list_expires_and_stays_bounded(
    settings: Settings, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.routes.passthrough.MAX_ENGINE_LISTS", 4)
    keyless = dataclasses.replace(settings, api_key="")
    async with app_client(keyless, upstream) as client:
        route = next(r for r in client.app.routes if getattr(r, "path", "") == "/v1/engines/list")  # type: ignore[attr-defined]
        engines: AccountPassThrough = route.endpoint.__self__
        engines.ttl = 0.2
        for i in range(6):
            await client.get("/v1/engines/list", headers={"Authorization": f"Bearer k{i}"})
        assert len(engines._engines) == 4  # the oldest two were let go
        hit = await client.get("/v1/engines/list", headers={"Authorization": "Bearer k5"})
        assert hit.headers["x-cache"] == "HIT"
        await asyncio.sleep(0.3)
        expired = await client.get("/v1/engines/list", headers={"Authorization": "Bearer k5"})
        assert expired.headers["x-cache"] == "MISS"
    assert len([c for c in upstream.calls if c.url.path == "/v1/engines/list"]) == 7


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    soon = email.utils.formatdate(now + 5, usegmt=True)
    assert retry_after_seconds(httpx.Response(429, headers={"retry-after": soon}), 60, now) == 5
    past = email.utils.formatdate(now - 50, usegmt=True)
    assert retry_after_seconds(httpx.Response(429, headers={"retry-after": past}), 60, now) == 0
    far = email.utils.formatdate(now + 86400, usegmt=True)
    assert retry_after_seconds(httpx.Response(429, headers={"retry-after": far}), 60, now) == 60
    odd = httpx.Response(429, headers={"retry-after": "soon"})
    assert retry_after_seconds(odd, 60, now) is None


class FlakyCoordinator(LocalCoordinator):
    """The first two flushes fail (a full disk, say); the third works."""

    failures = 2

    async def add_counts(self, counts):  # type: ignore[no-untyped-def]
        if self.failures:
            self.failures -= 1
            raise CoordinationError("no space left on the device", where="/full")
        await super().add_counts(counts)


async def test_the_counter_flusher_survives_failures_and_loses_nothing(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(counters_module, "FLUSH_SECONDS", 0.05)
    coordinator = FlakyCoordinator(tmp_path / "state", limit=10, period=1)
    entries = LocalEntryStore(tmp_path)
    counters = Counters(coordinator, entries)
    counters.count("misses", 3)
    runner = asyncio.ensure_future(counters.run())
    deadline = time.monotonic() + 5
    while (await coordinator.counts()).get("misses") != 3 and time.monotonic() < deadline:
        counters.count("misses", 0)
        await asyncio.sleep(0.05)
    assert not runner.done()  # still running after two failed flushes
    runner.cancel()
    assert (await coordinator.counts())["misses"] == 3 and coordinator.failures == 0
    await coordinator.close()
    await entries.close()
