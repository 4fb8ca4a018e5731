"""Hostile input and unusable answers against the real gateway (uvicorn, subprocess) and the
fake Stability on loopback (issue 8, items 6, 7, 12, 13, 23, 30).

Hostile requests are sent with http.client, which puts the path on the wire exactly as
written (`/v2beta/results/..` included): every answer must be a Stability-shaped JSON 4xx
given before any upstream call.
"""

from __future__ import annotations

import base64
import http.client
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import (
    FakeStability,
    GatewayProcess,
    accepted,
    corrupt_pixels,
    encode_multipart,
    image_size,
    png_bytes,
    start_on,
    status_body,
    wrong_size,
)
from tests.fakes.multipart import Part
from tests.fakes.stability import UPSCALE_4K_SIDE

API_KEY = "sk-test-SECRET-input-key-0123456789"
T2I = "/v1/generation/stable-diffusion-v1-6/text-to-image"
I2I = "/v1/generation/stable-diffusion-v1-6/image-to-image"
UPSCALE = "/v1/generation/esrgan-v1-x2plus/image-to-image/upscale"
CORE = "/v2beta/stable-image/generate/core"
V2 = "/v2beta/stable-image"
JSON = {"Accept": "application/json"}


def png_file(width: int, height: int, seed: int) -> tuple[str, bytes, str]:
    return ("picture.png", png_bytes(width, height, seed=seed), "image/png")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeStability]:
    with FakeStability() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset(fake: FakeStability) -> None:
    fake.reset()


def start_gateway(tmp: Path, fake: FakeStability, **env: Any) -> GatewayProcess:
    return start_on(tmp, fake.url, **env)


@pytest.fixture(scope="module")
def gateway(
    fake: FakeStability, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    process = start_gateway(tmp_path_factory.mktemp("input"), fake, mode="online", api_key=API_KEY)
    try:
        yield process
    finally:
        process.stop()
    assert API_KEY not in process.logs()


@pytest.fixture(scope="module")
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def post(
    client: httpx.Client, path: str, parts: list[Part], headers: dict[str, str] | None = None
) -> httpx.Response:
    body, content_type = encode_multipart(parts, "e2e-input-boundary")
    return client.post(path, content=body, headers={**content_type, **(headers or {})})


# --- 6, 7, 30: a batch of hostile requests -------------------------------------------------


def nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


def form(parts: list[Part]) -> tuple[bytes, dict[str, str]]:
    return encode_multipart(parts, "hostile-boundary")


JSON_TYPE = {"content-type": "application/json"}
HOSTILE: list[tuple[str, str, str, bytes, dict[str, str]]] = [
    ("inf-unknown", "POST", T2I, b'{"text_prompts":[{"text":"a"}],"zz":1e999}', JSON_TYPE),
    ("inf-extras", "POST", T2I, b'{"text_prompts":[{"text":"a"}],"extras":{"x":1e999}}', JSON_TYPE),
    ("inf-weight", "POST", T2I, b'{"text_prompts":[{"text":"a","weight":-1e999}]}', JSON_TYPE),
    ("deep-arrays", "POST", T2I, b"[" * 100_000 + b"]" * 100_000, JSON_TYPE),
    ("deep-extras", "POST", T2I,
     b'{"text_prompts":[{"text":"a"}],"extras":' + nested(500) + b"}", JSON_TYPE),
    ("unknown-field", "POST", T2I,
     json.dumps({"text_prompts": [{"text": "a"}], "notes": "x" * 100_000}).encode(), JSON_TYPE),
    ("prompts-string", "POST", T2I, b'{"text_prompts":"a cat"}', JSON_TYPE),
    ("samples-abc-i2i", "POST", I2I, *form([("text_prompts[0][text]", "a"), ("samples", "abc"),
                                            ("init_image", png_file(64, 64, 1))])),
    ("samples-abc-upscale", "POST", UPSCALE,
     *form([("samples", "abc"), ("image", png_file(512, 512, 2))])),
    ("samples-2-upscale", "POST", UPSCALE,
     *form([("samples", "2"), ("image", png_file(512, 512, 3))])),
    ("samples-abc-core", "POST", CORE, *form([("prompt", "a"), ("samples", "abc")])),
    ("unicode-seed-core", "POST", CORE, *form([("prompt", "a"), ("seed", "\u0667")])),
    ("long-extra-field", "POST", CORE, *form([("prompt", "a"), ("note", "y" * 10_001)])),
    ("results-nul", "GET", "/v2beta/results/%00", b"", {}),
    ("results-dotdot", "GET", "/v2beta/results/..", b"", {}),
    ("results-encoded-dotdot", "GET", "/v2beta/results/%2E%2E", b"", {}),
    ("results-query", "GET", "/v2beta/results/abc%3Fx=1", b"", {}),
    ("results-slash", "GET", "/v2beta/results/a%2Fb", b"", {}),
    ("get-on-post-route", "GET", T2I, b"", {}),
]  # fmt: skip


def test_hostile_requests_get_stability_shaped_4xx_and_never_reach_upstream(
    gateway: GatewayProcess, fake: FakeStability
) -> None:
    answers = {}
    for name, method, path, body, headers in HOSTILE:
        connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            answers[name] = (path, response.status, headers, response.read())
        finally:
            connection.close()
    for name, (path, status, headers, raw) in answers.items():
        assert 400 <= status < 500, (name, status, raw[:200])
        assert headers["content-type"] == "application/json", (name, raw[:200])
        body = json.loads(raw)
        v2 = path.startswith("/v2beta/")
        assert set(body) == ({"id", "name", "errors"} if v2 else {"id", "name", "message"}), name
    assert answers["get-on-post-route"][1] == 405
    assert "POST" in answers["get-on-post-route"][2]["allow"]
    assert answers["results-dotdot"][1] == 400
    assert fake.calls == []


# --- 12: an image that does not decode is never cached -------------------------------------


@pytest.mark.parametrize("route", ["v1", "v2"])
def test_a_png_that_does_not_decode_is_a_502_and_not_cached(
    client: httpx.Client, fake: FakeStability, route: str
) -> None:
    def ask() -> httpx.Response:
        if route == "v1":
            return client.post(T2I, json={"text_prompts": [{"text": "pixels"}], "seed": 12})
        return post(client, CORE, [("prompt", "pixels"), ("seed", "12")], JSON)

    fake.script(corrupt_pixels())
    broken = ask()
    assert broken.status_code == 502, broken.text
    assert broken.json()["name"] == "bad_upstream_response"
    assert broken.headers["x-cache"] == "MISS"
    good = ask()  # nothing was stored: the upstream is asked again, and this time it is fine
    assert (good.status_code, good.headers["x-cache"]) == (200, "MISS")
    assert ask().headers["x-cache"] == "HIT"
    assert len(fake.generation_calls()) == 2


def test_pixel_data_that_inflates_past_the_image_is_a_502_and_not_cached(
    client: httpx.Client, fake: FakeStability
) -> None:
    """A 512x512 PNG whose one small IDAT inflates to 40 MB of rows (about 50 times the
    image): refused as soon as the rows run past the image, never stored."""
    width = height = 512
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 40_000_000)
    bomb = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows)
            + png_chunk(b"IEND", b""))  # fmt: skip
    answer = {"artifacts": [{"base64": base64.b64encode(bomb).decode(), "seed": 13,
                             "finishReason": "SUCCESS"}]}  # fmt: skip
    fake.script(status_body(200, json.dumps(answer).encode(), "application/json"))
    ask = {"text_prompts": [{"text": "a bomb"}], "seed": 13}
    broken = client.post(T2I, json=ask)
    assert broken.status_code == 502, broken.text
    assert set(broken.json()) == {"id", "name", "message"}
    assert broken.json()["name"] == "bad_upstream_response"
    assert "more than" in broken.json()["message"], broken.text
    assert broken.headers["x-cache"] == "MISS"
    good = client.post(T2I, json=ask)  # nothing was stored: asked again, and fine this time
    assert (good.status_code, good.headers["x-cache"]) == (200, "MISS")
    assert client.post(T2I, json=ask).headers["x-cache"] == "HIT"
    assert len(fake.generation_calls()) == 2


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# --- 13: every v2beta edit and upscale answer has the documented size --------------------

SIZED: list[tuple[str, list[Part], tuple[int, int]]] = [
    ("edit/erase", [("image", png_file(512, 512, 31))], (512, 512)),
    ("edit/inpaint", [("image", png_file(96, 64, 32)), ("prompt", "p")], (96, 64)),
    ("edit/outpaint", [("image", png_file(128, 96, 33)), ("left", "64")], (192, 96)),
    ("edit/search-and-replace",
     [("image", png_file(96, 64, 34)), ("prompt", "p"), ("search_prompt", "q")], (96, 64)),
    ("edit/remove-background", [("image", png_file(80, 64, 35))], (80, 64)),
    ("upscale/fast", [("image", png_file(100, 80, 36))], (400, 320)),
    ("upscale/conservative", [("image", png_file(100, 80, 37)), ("prompt", "p")],
     (UPSCALE_4K_SIDE, round(UPSCALE_4K_SIDE * 0.8))),
]  # fmt: skip


@pytest.mark.parametrize(("route", "parts", "size"), SIZED, ids=[r for r, _, _ in SIZED])
def test_a_wrong_size_is_refused_and_not_cached_on_every_family(
    client: httpx.Client,
    fake: FakeStability,
    route: str,
    parts: list[Part],
    size: tuple[int, int],
) -> None:
    path = f"{V2}/{route}"
    fake.script(wrong_size())  # 64x64, whatever was asked
    wrong = post(client, path, parts)
    assert wrong.status_code == 502, wrong.text
    assert (wrong.json()["name"], wrong.headers["x-cache"]) == ("bad_upstream_response", "MISS")
    right = post(client, path, parts)
    assert (right.status_code, right.headers["x-cache"]) == (200, "MISS"), right.text
    assert image_size(right.content) == size
    assert post(client, path, parts).headers["x-cache"] == "HIT"
    assert len(fake.generation_calls()) == 2


def test_a_creative_upscale_job_of_the_wrong_size_is_refused_and_not_cached(
    client: httpx.Client, fake: FakeStability
) -> None:
    parts = [("prompt", "crisp"), ("image", png_file(80, 64, 41))]
    path = f"{V2}/upscale/creative"
    fake.script(accepted(polls=0, width=64, height=64), accepted(polls=0))
    first = post(client, path, parts, JSON)
    wrong = client.get(f"/v2beta/results/{first.json()['id']}", headers=JSON)
    assert wrong.status_code == 502, wrong.text
    assert wrong.json()["name"] == "bad_upstream_response" and "errors" in wrong.json()
    second = post(client, path, parts, JSON)  # not cached: a new job
    assert (second.status_code, second.headers["x-cache"]) == (200, "MISS")
    done = client.get(f"/v2beta/results/{second.json()['id']}", headers=JSON)
    assert done.status_code == 200, done.text
    image = base64.b64decode(done.json()["image"])
    assert image_size(image) == (UPSCALE_4K_SIDE, round(UPSCALE_4K_SIDE * 0.8))
    assert post(client, path, parts, JSON).headers["x-cache"] == "HIT"
    assert len(fake.generation_calls()) == 2


# --- 23: offline mode knows its engines ------------------------------------------------------


def test_offline_engines_come_from_the_configuration(fake: FakeStability, tmp_path: Path) -> None:
    engines = "my-engine, stable-diffusion-v1-6"
    gateway = start_gateway(tmp_path, fake, mode="offline", engines=engines)
    try:
        with httpx.Client(base_url=gateway.url, timeout=60) as c:
            prompt = {"text_prompts": [{"text": "offline"}]}
            unknown = c.post("/v1/generation/foo-engine/text-to-image", json=prompt)
            dropped = c.post("/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image",
                             json=prompt)  # fmt: skip
            mine = c.post("/v1/generation/my-engine/text-to-image", json=prompt)
            listed = c.get("/v1/engines/list")
    finally:
        gateway.stop()
    for refused in (unknown, dropped):
        assert refused.status_code == 404
        assert set(refused.json()) == {"id", "name", "message"}
        assert refused.json()["name"] == "not_found"
    assert "foo-engine" in unknown.json()["message"]
    assert (mine.status_code, mine.headers["x-cache"]) == (200, "OFFLINE")
    assert [e["id"] for e in listed.json()] == ["my-engine", "stable-diffusion-v1-6"]
    assert fake.calls == []
