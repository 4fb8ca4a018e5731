"""End-to-end fault injection: the real gateway process against the real fake Stability server.

Every test here runs `python -m gateway serve` as a subprocess (GatewayProcess) pointed at a
FakeStability on 127.0.0.1, scripts the upstream's behaviour, and checks what the callers got
and what the upstream saw (calls and their arrival times, recorded by the fake). Nothing is
mocked inside the gateway: retries, the limiter, single-flight, the cache and the fallback run
as in production.

Layout, to keep the file fast:

- one module-scoped fake (`upstream`, reset per test) and one module-scoped gateway with fast
  retry settings (`gateway`) for tests that only need distinct prompts;
- a fresh gateway (own cache folder, own limiter state) where settings or state matter;
- a fresh fake of its own for every concurrency or timing test, so nothing left hanging on
  the shared fake by another test can disturb its measurements.

Timing assertions are lower bounds (a backoff of at least N s was observed) or have wide margins
(at least 2x). Rate-limit windows are measured exactly as the issue states them: a window is the
configured period, half-open, and holds at most `limit` upstream arrivals.

The upstream key is a recognisable fake; after every test `no_key_leaks` checks that it never
appears in any gateway's captured log nor in any response body or header seen in this module.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.gateway_process import GatewayProcess, free_port, gateway_env
from tests.fakes.stability import (
    Call,
    FakeStability,
    error,
    hang,
    invalid_base64,
    not_an_image,
    ok,
    reset_mid_body,
    truncated_json,
    wrong_size,
)

KEY = "sk-test-SECRET-e2e-5b7d0c1f9a3e42d8"
ENGINE = "stable-diffusion-xl-1024-v1-0"
TEXT = f"/v1/generation/{ENGINE}/text-to-image"
ALLOW = {"X-Allow-Cached": "true"}
REFRESH = {"Cache-Control": "no-cache"}

# Fast retries for every gateway here unless a test is about the setting: backoff 0.2 s then
# 0.4 s, no jitter, a short 429 cool-down, and a deadline no test should reach by accident.
FAST: dict[str, object] = {
    "retry_attempts": 3,
    "backoff_initial": 0.2,
    "backoff_max": 1,
    "backoff_jitter": 0,
    "cooldown": 0.1,
    "connect_timeout": 2,
    "read_timeout": 30,
    "deadline": 20,
}

# Everything the gateways said and answered in this module, for the key-leak check.
GATEWAYS: list[GatewayProcess] = []
RESPONSES: list[httpx.Response] = []


# --- Helpers ---------------------------------------------------------------------------------


def body(prompt: str, seed: int = 1) -> dict[str, Any]:
    """A v1 text-to-image request; a fixed seed unless a test is about random seeds."""
    return {"text_prompts": [{"text": prompt}], "seed": seed}


def seen(response: httpx.Response) -> httpx.Response:
    RESPONSES.append(response)
    return response


def post(
    gateway: GatewayProcess,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> httpx.Response:
    return seen(httpx.post(f"{gateway.url}{TEXT}", json=payload, headers=headers, timeout=timeout))


async def _post_all(
    url: str,
    payloads: Sequence[dict[str, Any]],
    headers: dict[str, str] | None,
    parallel: int,
) -> list[httpx.Response]:
    gate = asyncio.Semaphore(parallel)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def one(payload: dict[str, Any]) -> httpx.Response:
            async with gate:
                return seen(await client.post(TEXT, json=payload, headers=headers))

        return list(await asyncio.gather(*(one(p) for p in payloads)))


def post_concurrently(
    gateway: GatewayProcess,
    payloads: Sequence[dict[str, Any]],
    headers: dict[str, str] | None = None,
    parallel: int | None = None,
) -> list[httpx.Response]:
    """All payloads at once (or `parallel` at a time) from one asyncio client."""
    return asyncio.run(_post_all(gateway.url, payloads, headers, parallel or len(payloads)))


def image_of(response: httpx.Response) -> bytes:
    """The first image in a v1 JSON answer."""
    return base64.b64decode(response.json()["artifacts"][0]["base64"])


def stats(gateway: GatewayProcess) -> dict[str, Any]:
    return dict(seen(httpx.get(f"{gateway.url}/cache/stats", timeout=10)).json())


def assert_stability_error(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    """Stability's v1 error shape: {"id": 32 hex, "name", "message"}."""
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload.keys() == {"id", "name", "message"}, payload
    assert re.fullmatch(r"[0-9a-f]{32}", payload["id"])
    assert payload["name"] == name, payload
    assert payload["message"]
    return dict(payload)


def gaps(calls: Sequence[Call]) -> list[float]:
    return [b.t - a.t for a, b in itertools.pairwise(calls)]


def assert_no_key(text: str | bytes, where: str) -> None:
    raw = text.encode() if isinstance(text, str) else text
    # The whole key, and its random tail in case something printed a truncated or split key.
    for needle in (KEY, KEY[-16:]):
        assert needle.encode() not in raw, f"the upstream API key leaked into {where}"


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_key_leaks() -> Iterator[None]:
    """After every test: the key is in no gateway log and no response seen in this module."""
    first = len(RESPONSES)
    yield
    for gateway in GATEWAYS:
        assert_no_key(gateway.logs(), f"the log of {gateway.log_path}")
    for response in RESPONSES[first:]:
        assert_no_key(response.content, f"a response body ({response.request.url})")
        assert_no_key(json.dumps(list(response.headers.multi_items())), "response headers")


@pytest.fixture
def upstream(shared_fake: FakeStability) -> FakeStability:
    shared_fake.reset()
    return shared_fake


@pytest.fixture
def own_fake() -> Iterator[FakeStability]:
    with FakeStability() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(
    shared_fake: FakeStability, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The shared gateway: default limit, fast retries, cache in a folder of its own."""
    folder = tmp_path_factory.mktemp("shared-gateway")
    env = gateway_env(folder / "cache", shared_fake.url, "online", KEY, **FAST)
    with GatewayProcess(env, log_dir=folder) as process:
        GATEWAYS.append(process)
        yield process


@pytest.fixture
def prompt(request: pytest.FixtureRequest) -> str:
    """A prompt no other test uses, so the shared gateway's cache never answers for another."""
    return f"{request.node.name} {uuid.uuid4().hex[:8]}"


StartGateway = Callable[..., GatewayProcess]


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[StartGateway]:
    """Start a fresh gateway (own cache folder unless given) with FAST overridden by kwargs."""
    started: list[GatewayProcess] = []

    def start(
        upstream_url: str, *, workers: int = 1, cache_dir: Path | None = None, **settings: object
    ) -> GatewayProcess:
        folder = tmp_path / f"gateway-{len(started)}"
        folder.mkdir()
        env = gateway_env(
            cache_dir or folder / "cache", upstream_url, "online", KEY, **{**FAST, **settings}
        )
        args = ["--workers", str(workers)] if workers > 1 else []
        process = GatewayProcess(env, extra_args=args, log_dir=folder)
        started.append(process)
        GATEWAYS.append(process)
        process.start()
        if workers > 1:
            process.wait_for_workers(workers)
        return process

    yield start
    for process in started:
        process.stop()


# --- Retries -----------------------------------------------------------------------------------


def test_429_429_200_retries_with_backoff_and_warnings(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    """Two 429s without Retry-After, then 200: exactly 3 calls, exponential backoff between
    them (0.2 s then 0.4 s configured), a WARNING per retry, and the answer cached."""
    upstream.script(error(429, "rate_limit_exceeded"), error(429, "rate_limit_exceeded"), ok())
    started = len(gateway.logs())
    response = post(gateway, body(prompt))
    assert response.status_code == 200 and response.headers["x-cache"] == "MISS"
    calls = upstream.generation_calls()
    assert len(calls) == 3
    first, second = gaps(calls)
    assert first >= 0.2 and second >= 0.4, gaps(calls)
    log = gateway.logs()[started:]
    retries = re.findall(r"WARNING gateway\.upstream: rate limit exceeded.*retrying in", log)
    assert len(retries) == 2, log
    assert post(gateway, body(prompt)).headers["x-cache"] == "HIT"
    assert len(upstream.generation_calls()) == 3


def test_a_cookie_the_upstream_sets_is_never_sent_back(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    """A CDN's cookie on one caller's answer must not ride on the retry, nor on anybody
    else's call: the gateway keeps no upstream cookie."""
    cookie = {"Set-Cookie": "__cf_bm=one-callers-session; Path=/"}
    upstream.script(error(503, "service_unavailable", headers=cookie), ok())
    assert post(gateway, body(prompt)).status_code == 200
    other = post(gateway, body(prompt + " another caller"), headers={"Authorization": "Bearer x"})
    assert other.status_code == 200
    calls = upstream.generation_calls()
    assert len(calls) == 3 and all("cookie" not in call.headers for call in calls)


def test_retry_after_is_honoured(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    upstream.script(error(429, "rate_limit_exceeded", headers={"Retry-After": "2"}), ok())
    started = len(gateway.logs())
    response = post(gateway, body(prompt))
    assert response.status_code == 200
    calls = upstream.generation_calls()
    assert len(calls) == 2
    assert gaps(calls)[0] >= 2.0, gaps(calls)
    assert re.search(r"rate limit exceeded.*retrying in 2\.0 s", gateway.logs()[started:])


@pytest.mark.parametrize(
    ("status", "name"), [(401, "unauthorized"), (403, "permission_denied"), (404, "not_found")]
)
def test_refusals_pass_through_after_one_call(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str, status: int, name: str
) -> None:
    upstream.script(error(status, name, "refused by the fake"))
    response = post(gateway, body(prompt))
    payload = assert_stability_error(response, status, name)
    assert payload["message"] == "refused by the fake"
    assert len(upstream.generation_calls()) == 1


def test_content_policy_400_passed_through_logged_and_not_cached(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    message = "Invalid prompts detected: your request was flagged by our content filter."
    upstream.script(error(400, "invalid_prompts", message))
    started = len(gateway.logs())
    response = post(gateway, body(prompt))
    payload = assert_stability_error(response, 400, "invalid_prompts")
    assert payload["message"] == message
    assert len(upstream.generation_calls()) == 1  # never retried
    log = gateway.logs()[started:]
    assert re.search(r"WARNING .*content policy refusal.*" + re.escape(prompt), log), log
    # Nothing was cached: the same request asks the upstream again.
    again = post(gateway, body(prompt))
    assert again.status_code == 200 and again.headers["x-cache"] == "MISS"
    assert len(upstream.generation_calls()) == 2


def test_content_filtered_200_passed_through_not_cached(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    upstream.script(ok(finish_reason="CONTENT_FILTERED"))
    filtered = post(gateway, body(prompt))
    assert filtered.status_code == 200
    assert filtered.json()["artifacts"][0]["finishReason"] == "CONTENT_FILTERED"
    second = post(gateway, body(prompt))
    assert second.json()["artifacts"][0]["finishReason"] == "SUCCESS"
    assert second.headers["x-cache"] == "MISS"
    assert len(upstream.generation_calls()) == 2  # the filtered image was not served again
    assert post(gateway, body(prompt)).headers["x-cache"] == "HIT"
    assert len(upstream.generation_calls()) == 2


# --- Upstream failures and the allow_cached fallback ------------------------------------------


def test_500_every_time_then_stale_fallback_on_no_cache_refresh(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    """500 on every call: 3 calls, then Stability's error; with X-Allow-Cached and an
    earlier entry (refreshed with no-cache), that entry with X-Cache: STALE."""
    original = post(gateway, body(prompt))
    assert original.status_code == 200 and original.headers["x-cache"] == "MISS"
    upstream.default = error(500)

    failed = post(gateway, body(prompt), REFRESH)
    assert_stability_error(failed, 500, "server_error")
    assert len(upstream.generation_calls()) == 1 + 3

    started = len(gateway.logs())
    stale = post(gateway, body(prompt), {**REFRESH, **ALLOW})
    assert stale.status_code == 200
    assert stale.headers["x-cache"] == "STALE"
    assert image_of(stale) == image_of(original)
    assert len(upstream.generation_calls()) == 1 + 3 + 3
    assert re.search(r"WARNING gateway\.pipeline: .*fallback \(STALE\)", gateway.logs()[started:])

    # Permission without an entry is no help: the caller gets the error.
    other = post(gateway, body(prompt + " never cached"), ALLOW)
    assert_stability_error(other, 500, "server_error")


def test_5xx_with_retry_after_and_502_503_504_are_retried(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    upstream.script(error(502), error(503, headers={"Retry-After": "0.5"}), ok())
    assert post(gateway, body(prompt)).status_code == 200
    calls = upstream.generation_calls()
    assert len(calls) == 3 and gaps(calls)[1] >= 0.5
    upstream.reset()
    upstream.script(error(504), error(504), error(504))
    assert_stability_error(post(gateway, body(prompt + " b")), 504, "server_error")
    assert len(upstream.generation_calls()) == 3


FAULTS = {
    "reset_mid_body": (reset_mid_body, 503, "upstream_unavailable", "RemoteProtocolError"),
    "truncated_json": (truncated_json, 502, "bad_upstream_response", "not valid JSON"),
    "invalid_base64": (invalid_base64, 502, "bad_upstream_response", "invalid base64"),
    "not_an_image": (not_an_image, 502, "bad_upstream_response", "not a readable image"),
    "wrong_size": (wrong_size, 502, "bad_upstream_response", "64x64 image, expected 1024x1024"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_broken_answers_are_clear_errors_and_never_cached(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str, fault: str
) -> None:
    """A 200 the gateway cannot trust, or a connection broken mid-body (retried like any
    connection error, so it breaks on every attempt here): a clear error, nothing cached,
    and the next request asks the upstream again."""
    make, status, name, words = FAULTS[fault]
    upstream.default = make()
    failed = post(gateway, body(prompt))
    payload = assert_stability_error(failed, status, name)
    assert words in payload["message"], payload
    failed_calls = len(upstream.generation_calls())
    assert failed_calls == (3 if fault == "reset_mid_body" else 1)

    upstream.default = ok()
    retried = post(gateway, body(prompt))
    assert retried.status_code == 200 and retried.headers["x-cache"] == "MISS"
    assert len(upstream.generation_calls()) == failed_calls + 1
    assert post(gateway, body(prompt)).headers["x-cache"] == "HIT"


def test_connection_refused_is_503_and_the_next_request_tries_again(
    start_gateway: StartGateway, prompt: str
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(nobody)
    for round_ in (1, 2):
        failed = post(gateway, body(prompt))
        payload = assert_stability_error(failed, 503, "upstream_unavailable")
        assert "ConnectError" in payload["message"] and "3 attempts" in payload["message"]
        counts = stats(gateway)
        assert counts["upstream_calls"] == 3 * round_  # the second request tried again
        assert counts["entries"] == 0
    assert gateway.logs().count("ConnectError") >= 4  # two WARNINGs per request


@pytest.mark.parametrize("path", ["deadline", "read_timeout", "retried_read_timeout"])
def test_hanging_upstream_is_answered_within_the_deadline(
    shared_fake: FakeStability, start_gateway: StartGateway, prompt: str, path: str
) -> None:
    """deadline: one attempt hangs past the whole-request deadline (1 s) -> 504 by then.
    read_timeout: the attempt times out after 0.3 s; it was sent whole and may have been
    charged, so by default it is not retried -> 504 after 1 attempt. With
    retry_read_timeouts each attempt is retried -> 504 after 3 attempts.
    Either way, with an earlier entry and X-Allow-Cached, the entry is served STALE."""
    shared_fake.reset()
    if path == "deadline":
        gateway = start_gateway(shared_fake.url, deadline=1, read_timeout=30)
        limit, attempts = 1.0, 1
    elif path == "read_timeout":
        gateway = start_gateway(shared_fake.url, deadline=20, read_timeout=0.3)
        limit, attempts = 0.3 + 0.1, 1
    else:
        gateway = start_gateway(
            shared_fake.url, deadline=20, read_timeout=0.3, backoff_initial=0.05,
            retry_read_timeouts="true",
        )  # fmt: skip
        limit, attempts = 3 * 0.3 + 0.05 + 0.1, 3
    original = post(gateway, body(prompt))
    assert original.status_code == 200
    shared_fake.default = hang(60)

    started = time.monotonic()
    response = post(gateway, body(prompt), REFRESH, timeout=90)
    elapsed = time.monotonic() - started
    payload = assert_stability_error(response, 504, "upstream_timeout")
    assert elapsed < 10 * limit, elapsed  # by its own bound, not the 60 s hang
    if path == "deadline":
        assert elapsed >= 0.9 and "1 s deadline" in payload["message"]
    assert len(shared_fake.generation_calls()) == 1 + attempts

    started = time.monotonic()
    stale = post(gateway, body(prompt), {**REFRESH, **ALLOW}, timeout=90)
    assert time.monotonic() - started < 10 * limit
    assert stale.headers["x-cache"] == "STALE" and image_of(stale) == image_of(original)


def test_ttl_expiry_and_allow_cached_default(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    """An expired entry is refreshed from the upstream; when that fails it is the fallback,
    here without any header because the config sets allow_cached_default."""
    gateway = start_gateway(own_fake.url, ttl=1, allow_cached="true", backoff_initial=0.05)
    original = post(gateway, body(prompt))
    assert post(gateway, body(prompt)).headers["x-cache"] == "HIT"
    time.sleep(1.2)
    own_fake.default = error(500)
    stale = post(gateway, body(prompt))
    assert stale.headers["x-cache"] == "STALE" and image_of(stale) == image_of(original)
    refused = post(gateway, body(prompt), {"X-Allow-Cached": "false"})
    assert_stability_error(refused, 500, "server_error")
    assert len(own_fake.generation_calls()) == 1 + 3 + 3

    own_fake.default = ok()
    fresh = post(gateway, body(prompt))
    assert fresh.headers["x-cache"] == "MISS" and image_of(fresh) != image_of(original)
    again = post(gateway, body(prompt))
    assert again.headers["x-cache"] == "HIT" and image_of(again) == image_of(fresh)


def test_random_seed_refresh_policy_keeps_the_last_image_as_fallback(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    gateway = start_gateway(own_fake.url, random_seed_policy="refresh", backoff_initial=0.05)
    first = post(gateway, body(prompt, seed=0))
    second = post(gateway, body(prompt, seed=0))
    assert first.headers["x-cache"] == second.headers["x-cache"] == "MISS"
    assert image_of(first) != image_of(second)  # a fresh random image every time
    assert len(own_fake.generation_calls()) == 2
    # A fixed seed is still served from the cache under this policy.
    post(gateway, body(prompt, seed=5))
    assert post(gateway, body(prompt, seed=5)).headers["x-cache"] == "HIT"

    own_fake.default = error(503)
    stale = post(gateway, body(prompt, seed=0), ALLOW)
    assert stale.headers["x-cache"] == "STALE" and image_of(stale) == image_of(second)
    assert_stability_error(post(gateway, body(prompt, seed=0)), 503, "server_error")


# --- The shared rate limit ---------------------------------------------------------------------


def test_gateway_429_when_the_queue_is_too_long(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    gateway = start_gateway(own_fake.url, rate_limit=1, rate_period=30, rate_max_wait=1)
    assert post(gateway, body(prompt + " 1")).status_code == 200
    started = time.monotonic()
    refused = post(gateway, body(prompt + " 2"))
    assert time.monotonic() - started < 10  # refused at once, not after the 30 s wait
    assert_stability_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 31
    assert len(own_fake.generation_calls()) == 1  # the refused request never went upstream


def test_callers_who_leave_the_queue_spend_no_credit(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    """A request abandoned while queued for the limiter is cancelled before it reaches the
    upstream; a flight still wanted by another caller goes ahead."""
    gateway = start_gateway(own_fake.url, rate_limit=1, rate_period=3, rate_margin=0)
    assert post(gateway, body(prompt + " first")).status_code == 200
    with pytest.raises(httpx.TimeoutException):  # queued ~3 s; the caller gives up at 0.5 s
        post(gateway, body(prompt + " abandoned"), timeout=0.5)

    async def one_leaves_one_stays() -> httpx.Response:
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            leaver = asyncio.ensure_future(client.post(TEXT, json=body(prompt + " shared"),
                                                       timeout=0.5))  # fmt: skip
            stayer = client.post(TEXT, json=body(prompt + " shared"), timeout=30)
            with pytest.raises(httpx.TimeoutException):
                await leaver
            return await stayer

    stayed = asyncio.run(one_leaves_one_stays())
    assert stayed.status_code == 200
    paths = [call.json()["text_prompts"][0]["text"] for call in own_fake.generation_calls()]
    assert paths == [prompt + " first", prompt + " shared"]  # never the abandoned one
    assert "caller went away" in gateway.logs()


def _conformance(
    fake: FakeStability, gateway: GatewayProcess, prompt: str, n: int, limit: int, period: float
) -> None:
    started = time.monotonic()
    responses = post_concurrently(gateway, [body(f"{prompt} {i}") for i in range(n)])
    elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * n
    calls = fake.generation_calls()
    assert len(calls) == n
    busiest = fake.max_in_window(period)
    # The least time n sends can take at `limit` per `period`; a limiter that is much slower
    # than that is not "waiting in a queue", it is failing to use the allowance.
    least = (n - 1) // limit * period
    times = sorted(c.t for c in calls)
    tightest = min(b - a for a, b in zip(times, times[limit:], strict=False))
    print(
        f"\n{n} requests at {limit}/{period:g}s: busiest {period:g} s window {busiest}, "
        f"closest {limit + 1} arrivals {tightest:.3f} s apart, "
        f"span of arrivals {times[-1] - times[0]:.2f} s (least {least:g} s), total {elapsed:.2f} s"
    )
    assert busiest <= limit, [round(c.t - calls[0].t, 3) for c in calls]
    assert elapsed < 2 * least + 3


@pytest.mark.parametrize("workers", [1, 2])
def test_disk_limiter_conformance(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str, workers: int
) -> None:
    """20 distinct concurrent requests at 5 per 2 s, one or two worker processes: all succeed,
    and no 2 s window holds more than 5 upstream arrivals."""
    gateway = start_gateway(
        own_fake.url, workers=workers, rate_limit=5, rate_period=2, rate_margin=0.3
    )
    _conformance(own_fake, gateway, prompt, 20, 5, 2.0)


def test_memory_limiter_conformance(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    gateway = start_gateway(
        own_fake.url, rate_backend="memory", rate_limit=5, rate_period=2, rate_margin=0.3
    )
    _conformance(own_fake, gateway, prompt, 11, 5, 2.0)


def test_upstream_429_cools_down_every_caller(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    """At 1 per 0.3 s, three requests queue; the first upstream answer is a 429, sent 0.3 s
    late so that the other two are already waiting for their slots. They must still wait out
    the 1 s cool-down that starts when the 429 arrives, and after it the limit holds. (The
    memory backend's equivalent is in test_ratelimit.py.)"""
    gateway = start_gateway(
        own_fake.url,
        rate_limit=1,
        rate_period=0.3,
        rate_margin=0.2,
        cooldown=1,
    )
    own_fake.script(error(429, "rate_limit_exceeded", delay=0.3))
    responses = post_concurrently(gateway, [body(f"{prompt} {i}") for i in range(3)])
    assert [r.status_code for r in responses] == [200] * 3
    calls = own_fake.generation_calls()
    assert len(calls) == 4
    after = [round(c.t - calls[0].t, 3) for c in calls[1:]]
    assert min(after) >= 0.3 + 1, f"sent during the cool-down: {after}"
    assert own_fake.max_in_window(0.3) <= 1, after


# --- Single flight and parallelism -------------------------------------------------------------


def test_single_flight_one_process(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    own_fake.default = ok(delay=1.0)
    gateway = start_gateway(own_fake.url)
    responses = post_concurrently(gateway, [body(prompt)] * 50)
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.content for r in responses}) == 1
    assert len(own_fake.generation_calls()) == 1


def test_single_flight_across_two_workers(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    """What is guaranteed across processes: the worker that first takes the key's lease in
    the shared cache folder calls the upstream; a request for the same key in the other
    worker waits for that lease and answers with the entry it stored (X-Cache: HIT), so 50
    identical concurrent requests cost one upstream call. (An upstream error is shared only
    within a process: the other worker would then try once itself.)"""
    own_fake.default = ok(delay=1.0)
    gateway = start_gateway(own_fake.url, workers=2)
    started = len(gateway.logs())
    responses = post_concurrently(gateway, [body(prompt)] * 50)
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.content for r in responses}) == 1
    assert len(own_fake.generation_calls()) == 1
    # Every request missed the cache when it arrived...
    assert gateway.logs()[started:].count(": miss") == 50
    # ...and some were answered by the worker that did not call upstream, from the entry the
    # other one stored (in-process followers of the leader answer MISS, like the leader).
    sources = [r.headers["x-cache"] for r in responses]
    print(f"\nX-Cache across two workers: {sorted(set(sources))}, HIT={sources.count('HIT')}")
    assert "HIT" in sources and "MISS" in sources

    # With an instant upstream, requests that missed the cache can still be arriving while
    # the first one's result is being stored: they must use it, not call again.
    own_fake.default = ok()
    calls = []
    for round_ in range(8):
        own_fake.reset()
        answers = post_concurrently(gateway, [body(f"{prompt} fast {round_}")] * 50)
        assert [r.status_code for r in answers] == [200] * 50
        assert len({r.content for r in answers}) == 1
        calls.append(len(own_fake.generation_calls()))
    assert calls == [1] * 8, calls


def test_deadline_holds_for_requests_waiting_on_another_worker(
    shared_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    """A request that waits for the other worker's lease on the same key spends its deadline
    waiting; when that call hangs, the waiter is answered by its own deadline too, instead of
    starting a fresh call with a fresh deadline after the wait."""
    shared_fake.reset()
    shared_fake.default = hang(60)
    gateway = start_gateway(shared_fake.url, workers=2, deadline=2, read_timeout=60)
    started = time.monotonic()
    responses = post_concurrently(gateway, [body(prompt)] * 30)
    elapsed = time.monotonic() - started
    for response in responses:
        assert_stability_error(response, 504, "upstream_timeout")
    assert elapsed < 20, elapsed  # ten times the deadline, a third of the hang
    assert len(shared_fake.generation_calls()) <= 2


def test_batch_of_ten_with_four_callers_runs_in_parallel(
    own_fake: FakeStability, start_gateway: StartGateway, prompt: str
) -> None:
    """The seeds' batch: 10 images at 1 s each, 4 in parallel, well under the 10 s of a
    serial run (3 rounds of 1 s are the least it can take)."""
    own_fake.default = ok(delay=1.0)
    gateway = start_gateway(own_fake.url)
    started = time.monotonic()
    responses = post_concurrently(gateway, [body(f"{prompt} {i}") for i in range(10)], parallel=4)
    elapsed = time.monotonic() - started
    print(f"\nbatch of 10 x 1 s with 4 callers: {elapsed:.2f} s (serial: 10 s)")
    assert [r.status_code for r in responses] == [200] * 10
    assert elapsed >= 3.0  # three rounds of 1 s at least: never more than 4 at once
    assert 2 <= own_fake.concurrency_peak <= 4  # in parallel, within the bound
    assert elapsed < 9  # a serial run takes 10 s


# --- The key --------------------------------------------------------------------------------


def test_api_key_reaches_upstream_but_never_leaks(
    upstream: FakeStability, gateway: GatewayProcess, prompt: str
) -> None:
    """The key is really in use (the fake received it), yet after refusals, errors and
    inspection it is in no log and no answer. (`no_key_leaks` repeats the check after every
    test in this module, over every gateway started so far.)"""
    upstream.script(error(401, "unauthorized", "bad key"), error(500), error(500), error(500))
    post(gateway, body(prompt))
    post(gateway, body(prompt))
    post(gateway, body(prompt), {"Authorization": "Bearer caller-own-key"})
    entries = seen(httpx.get(f"{gateway.url}/cache/entries", timeout=10))
    assert entries.status_code == 200
    stats(gateway)
    authorizations = {c.headers.get("authorization") for c in upstream.generation_calls()}
    assert authorizations == {f"Bearer {KEY}"}
    assert len(RESPONSES) >= 5 and GATEWAYS
    for process in GATEWAYS:
        assert_no_key(process.logs(), str(process.log_path))
    for response in RESPONSES:
        assert_no_key(response.content, str(response.request.url))
        assert_no_key(json.dumps(list(response.headers.multi_items())), "response headers")
