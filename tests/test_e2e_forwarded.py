"""End to end: a Stability route the gateway does not know (3D, audio, later ones) is
forwarded as sent, for real (the gateway as a subprocess, the fake Stability on loopback):
byte for byte both ways, retried on 429, never cached, a large answer streamed rather than
held, path tricks refused on the wire, offline mode says so."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import (
    FakeStability,
    GatewayProcess,
    encode_multipart,
    reply,
    start_on,
)
from tests.fakes.raw_http import exchange, request_bytes
from tests.fakes.stability import audio_clip, glb_model

API_KEY = "sk-test-SECRET-forwarded-key-0123456789"
FAST_3D = "/v2beta/3d/stable-fast-3d"
AUDIO = "/v2beta/audio/stable-audio-2/text-to-audio"
BIG = 64 * 1024 * 1024


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
    process = start_gateway(tmp_path_factory.mktemp("forwarded"), fake, mode="online",
                            api_key=API_KEY)  # fmt: skip
    try:
        yield process
    finally:
        process.stop()
    assert API_KEY not in process.logs()


@pytest.fixture
def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def test_a_3d_route_is_forwarded_byte_for_byte_both_ways(
    client: httpx.Client, fake: FakeStability
) -> None:
    picture = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64
    body, content_type = encode_multipart([("image", ("chair.png", picture, "image/png")),
                                           ("texture_resolution", "1024")], "b-3d")  # fmt: skip
    response = client.post(
        f"{FAST_3D}?foreground_ratio=0.85&tag=a%2Fb",
        content=body,
        headers={**content_type, "Accept": "model/gltf-binary", "Stability-Client-ID": "vid"},
    )
    expected = glb_model(body)  # what the fake's built-in 3D route answers for this body
    assert response.status_code == 200
    assert response.content == expected.body
    assert response.headers["content-type"] == "model/gltf-binary"
    assert response.headers["content-disposition"] == 'attachment; filename="model.glb"'
    assert response.headers["x-cache"] == "BYPASS"
    (call,) = fake.calls
    assert (call.method, call.path, call.query) == (
        "POST",
        FAST_3D,
        "foreground_ratio=0.85&tag=a%2Fb",
    )
    assert call.body == body
    assert call.headers["content-type"] == content_type["content-type"]
    assert call.headers["accept"] == "model/gltf-binary"
    assert call.headers["stability-client-id"] == "vid"
    assert call.headers["authorization"] == f"Bearer {API_KEY}"


def test_an_audio_route_passes_its_headers_and_bytes(
    client: httpx.Client, fake: FakeStability
) -> None:
    body, content_type = encode_multipart(
        [("prompt", "rain on a tin roof"), ("duration", "20")], "b-au"
    )
    response = client.post(AUDIO, content=body, headers={**content_type, "Accept": "audio/*"})
    expected = audio_clip(body)
    assert (response.status_code, response.content) == (200, expected.body)
    assert response.headers["content-type"] == "audio/mpeg"
    assert expected.headers is not None
    assert response.headers["finish-reason"] == "SUCCESS"
    assert response.headers["seed"] == expected.headers["seed"]


def test_status_and_scripted_headers_pass_through(
    client: httpx.Client, fake: FakeStability
) -> None:
    fake.on(
        "/v2/video/jobs/abc",
        reply(status=202, body=b'{"id": "abc", "status": "in-progress"}',
              content_type="application/json",
              headers={"x-request-id": "rq-123", "x-upstream-extra": "kept"}),
    )  # fmt: skip
    response = client.get("/v2/video/jobs/abc")
    assert (response.status_code, response.json()["status"]) == (202, "in-progress")
    assert (response.headers["x-request-id"], response.headers["x-upstream-extra"]) == (
        "rq-123",
        "kept",
    )


def test_a_429_then_200_is_retried_and_never_cached(
    client: httpx.Client, fake: FakeStability
) -> None:
    model = b"glTF\x02\x00\x00\x00" + b"\x00\xff" * 1000
    fake.on(
        FAST_3D,
        reply(status=429, body=b'{"id": "x", "name": "rate_limit_exceeded", "errors": ["slow"]}',
              content_type="application/json", headers={"Retry-After": "0"}),
        reply(body=model, content_type="model/gltf-binary"),
    )  # fmt: skip
    first = client.post(FAST_3D, content=b"the same request")
    second = client.post(FAST_3D, content=b"the same request")
    assert (first.status_code, first.content) == (200, model)
    assert (second.status_code, second.content, second.headers["x-cache"]) == (200, model, "BYPASS")
    assert [c.body for c in fake.calls] == [b"the same request"] * 3  # 429, retry, second


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_large_answer_is_streamed_not_held(
    gateway: GatewayProcess, client: httpx.Client, fake: FakeStability
) -> None:
    held = threading.Event()
    data = bytes(range(256)) * (BIG // 256)
    warm_up = reply(body=data[: 1 << 20], content_type="model/gltf-binary")
    fake.on(FAST_3D, warm_up, reply(body=data, content_type="model/gltf-binary", hold=held))
    assert client.post(FAST_3D, content=b"warm up").content == data[: 1 << 20]
    assert gateway.pid is not None
    before = _peak_rss_kib(gateway.pid)
    received, digest = 0, hashlib.sha256()
    try:
        with client.stream("POST", FAST_3D, content=b"big") as response:
            assert response.headers["content-length"] == str(BIG)
            pieces = response.iter_raw()
            # The fake has not produced its last megabyte yet: whatever arrived was streamed.
            while received < 1 << 20:
                piece = next(pieces)
                received += len(piece)
                digest.update(piece)
            assert not held.is_set() and received < BIG
            held.set()
            for piece in pieces:
                received += len(piece)
                digest.update(piece)
    finally:
        held.set()
    assert (received, digest.digest()) == (BIG, hashlib.sha256(data).digest())
    # Measured: about 7 MiB whatever the size (32 or 96 MiB); holding the body would be BIG.
    grown_kib = _peak_rss_kib(gateway.pid) - before
    assert grown_kib < BIG // 1024 // 2, f"the gateway's peak RSS grew {grown_kib} KiB"


def test_an_answer_broken_off_upstream_is_broken_off_for_the_caller(
    gateway: GatewayProcess, client: httpx.Client, fake: FakeStability
) -> None:
    never = threading.Event()
    data = b"\x01" * (4 << 20)
    fake.on(FAST_3D, reply(body=data, chunk=1 << 20, hold=never, hold_seconds=0.2))
    received = 0
    with (
        pytest.raises(httpx.RemoteProtocolError),  # not a short body that looks whole
        client.stream("POST", FAST_3D, content=b"x") as response,
    ):
        assert response.status_code == 200
        for piece in response.iter_raw():
            received += len(piece)
    assert 0 < received < len(data)
    assert "broke off /v2beta/3d/stable-fast-3d mid-body" in gateway.logs()


def test_path_tricks_are_refused_on_the_wire(gateway: GatewayProcess, fake: FakeStability) -> None:
    for path in ("/v2beta/../v1/user/balance", "/v2beta/3d/a%2Fb", "/v1//evil.example/x",
                 "/v2beta/%2e%2e/v1/user/account"):  # fmt: skip
        answer = exchange(gateway.port, request_bytes("GET", path))
        assert answer.status == 400, (path, answer.body)
        assert answer.json()["name"] == "invalid_path"
        assert set(answer.json()) == ({"id", "name", "message"} if path.startswith("/v1/")
                                      else {"id", "name", "errors"})  # fmt: skip
    assert fake.calls == []


def test_offline_mode_answers_503_offline_mode(fake: FakeStability, tmp_path: Path) -> None:
    gateway = start_gateway(tmp_path, fake, mode="offline")
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            v2 = client.post(FAST_3D, content=b"x")
            v1 = client.get("/v1/new/route")
    finally:
        gateway.stop()
    assert (v2.status_code, v2.json()["name"], set(v2.json())) == (
        503,
        "offline_mode",
        {"id", "name", "errors"},
    )
    assert (v1.status_code, set(v1.json())) == (503, {"id", "name", "message"})
    assert fake.calls == []
