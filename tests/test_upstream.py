"""The upstream client with respx: what is retried, what is not, and what is sent."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
import respx

from cache.local import LocalCoordinator
from gateway.config import Settings
from gateway.deadline import Deadline
from gateway.errors import GatewayTimeout, UpstreamUnavailable
from gateway.generation import UpstreamRequest
from gateway.upstream import UpstreamClient

URL = "https://upstream.test/v1/generation/e/text-to-image"
REQUEST = UpstreamRequest("POST", "/v1/generation/e/text-to-image", json={"a": 1})


class Client:
    def __init__(self, settings: Settings, tmp_path: Path) -> None:
        coordinator = LocalCoordinator(tmp_path / "state", limit=100, period=1, max_wait=10)
        self.upstream = UpstreamClient(settings, coordinator.limiter)

    async def send(self, request: UpstreamRequest, caller: dict[str, str]) -> httpx.Response:
        answer = await self.upstream.send(request, caller, deadline=Deadline(30))
        return answer.response


def client(settings: Settings, tmp_path: Path) -> Client:
    return Client(settings, tmp_path)


def error(status: int, name: str = "server_error", headers: dict | None = None) -> httpx.Response:
    body = {"id": "0" * 32, "name": name, "message": "m"}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.anyio
@respx.mock
async def test_429_429_200_is_retried_with_warnings(settings, tmp_path, caplog) -> None:
    route = respx.post(URL).mock(
        side_effect=[error(429, "rate_limit_exceeded"), error(429), httpx.Response(200, json={})]
    )
    caplog.set_level(logging.WARNING)
    response = await client(settings, tmp_path).send(REQUEST, {})
    assert response.status_code == 200 and route.call_count == 3
    assert sum("rate limit exceeded" in r.message for r in caplog.records) == 2
    assert settings.api_key not in caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404])
@respx.mock
async def test_refusals_are_not_retried(settings, tmp_path, status) -> None:
    route = respx.post(URL).mock(return_value=error(status, "invalid_prompts"))
    response = await client(settings, tmp_path).send(REQUEST, {})
    assert response.status_code == status and route.call_count == 1
    assert response.json()["name"] == "invalid_prompts"


@pytest.mark.anyio
@respx.mock
async def test_5xx_exhausts_attempts_and_returns_the_last_answer(settings, tmp_path) -> None:
    route = respx.post(URL).mock(return_value=error(500))
    response = await client(settings, tmp_path).send(REQUEST, {})
    assert response.status_code == 500 and route.call_count == 3


@pytest.mark.anyio
@respx.mock
async def test_network_errors_become_503_and_timeouts_504(settings, tmp_path) -> None:
    route = respx.post(URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(UpstreamUnavailable):
        await client(settings, tmp_path).send(REQUEST, {})
    assert route.call_count == 3
    route.mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(GatewayTimeout):
        await client(settings, tmp_path).send(REQUEST, {})


@pytest.mark.anyio
@pytest.mark.parametrize(("retry_read_timeouts", "calls"), [(False, 1), (True, 3)])
@respx.mock
async def test_read_timeouts_are_retried_only_when_allowed(
    settings, tmp_path, retry_read_timeouts, calls
) -> None:
    """A read timeout comes after the request was sent whole: the image may have been made
    and charged, so by default it is not sent again. Connect errors always are."""
    settings = settings.replace(retry={"retry_read_timeouts": retry_read_timeouts})
    route = respx.post(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(GatewayTimeout) as caught:
        await client(settings, tmp_path).send(REQUEST, {})
    assert route.call_count == calls
    assert caught.value.name == "upstream_timeout"
    assert (
        "may have been generated and charged" in caught.value.message
    ) is not retry_read_timeouts


@pytest.mark.anyio
@respx.mock
async def test_retry_after_is_honoured(settings, tmp_path) -> None:
    respx.post(URL).mock(
        side_effect=[error(503, headers={"Retry-After": "0.3"}), httpx.Response(200, json={})]
    )
    import time

    started = time.monotonic()
    response = await client(settings, tmp_path).send(REQUEST, {})
    assert response.status_code == 200 and time.monotonic() - started >= 0.3


@pytest.mark.anyio
@respx.mock
async def test_gateway_key_replaces_caller_key(settings, tmp_path) -> None:
    route = respx.post(URL).mock(return_value=httpx.Response(200, json={}))
    caller = {"authorization": "Bearer caller-key", "stability-client-id": "svc", "cookie": "c"}
    await client(settings, tmp_path).send(REQUEST, caller)
    sent = route.calls.last.request.headers
    assert sent["authorization"] == f"Bearer {settings.api_key}"
    assert sent["stability-client-id"] == "svc" and "cookie" not in sent
    assert sent["accept"] == "application/json"


@pytest.mark.anyio
@respx.mock
async def test_without_gateway_key_the_caller_key_is_forwarded(settings, tmp_path) -> None:
    import dataclasses

    keyless = dataclasses.replace(settings, api_key="")
    route = respx.post(URL).mock(return_value=httpx.Response(200, json={}))
    await client(keyless, tmp_path).send(REQUEST, {"authorization": "Bearer caller-key"})
    assert route.calls.last.request.headers["authorization"] == "Bearer caller-key"


def test_the_upstream_is_read_in_pieces_of_256_kib(settings, tmp_path) -> None:
    """httpcore's read size is a class attribute (no per-client setting): an httpcore that
    renames it would silently bring back 64 KiB reads, twice the CPU per 3.5 MB answer."""
    import httpcore

    from gateway.upstream import UPSTREAM_READ_BYTES

    client(settings, tmp_path)
    assert httpcore.AsyncHTTP11Connection.READ_NUM_BYTES == UPSTREAM_READ_BYTES == 256 * 1024


@pytest.mark.anyio
@respx.mock
async def test_cookies_the_upstream_sets_are_never_sent_back(settings, tmp_path) -> None:
    """One caller's call must not carry state (a CDN's cookie, say) into the next one's."""
    route = respx.post(URL).mock(
        return_value=httpx.Response(
            200, json={}, headers={"set-cookie": "__cf_bm=abc; Path=/; Domain=upstream.test"}
        )
    )
    upstream = client(settings, tmp_path)
    await upstream.send(REQUEST, {"authorization": "Bearer one"})
    await upstream.send(REQUEST, {"authorization": "Bearer two"})
    assert route.call_count == 2 and "cookie" not in route.calls.last.request.headers
