"""The server's own limits, against a real gateway subprocess: huge and numerous headers,
slow headers (slowloris), slow bodies, and the bound on concurrent connections."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from gateway.cli.server_limits import ServerLimits
from gateway.config import ConfigError, load_settings
from tests.fakes import GatewayProcess, gateway_env
from tests.fakes.raw_http import (
    connect,
    exchange,
    read_response,
    request_bytes,
    wait_closed,
)

PATH = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
V2_PATH = "/v2beta/stable-image/generate/core"
BODY = json.dumps({"text_prompts": [{"text": "limits"}], "width": 1024, "height": 1024})


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Default header limits (64 KiB, 100 headers); a short header timeout."""
    tmp = tmp_path_factory.mktemp("limits")
    env = gateway_env(tmp / "cache", mode="offline", header_timeout=1, body_timeout=1)
    with GatewayProcess(env, log_dir=tmp) as process:
        yield process


def assert_refused_431(response, *, v2: bool = False) -> None:  # type: ignore[no-untyped-def]
    assert response.status == 431, response
    assert response.headers["content-type"] == "application/json"
    assert response.headers["connection"] == "close"
    error = response.json()
    assert error["name"] == "request_header_fields_too_large"
    assert len(error["id"]) == 32
    assert ("errors" in error) if v2 else ("message" in error)


def test_huge_and_numerous_headers_get_431_and_memory_stays_bounded(
    gateway: GatewayProcess,
) -> None:
    assert gateway.pid is not None
    assert httpx.get(gateway.url + "/healthz").status_code == 200
    before = rss_bytes(gateway.pid)
    huge = request_bytes("GET", "/healthz", [("X-Huge", "a" * (8 * 1024 * 1024))])
    many = request_bytes("GET", "/healthz", [(f"X-H{i}", "v") for i in range(20_000)])
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: exchange(gateway.port, r), [huge] * 8 + [many] * 8))
    for response in answers:
        assert_refused_431(response)
    # 150 headers of a few bytes: far under the byte bound, over the count.
    counted = exchange(gateway.port, request_bytes("GET", "/healthz", [("X-C", "1")] * 150))
    assert_refused_431(counted)
    assert "header fields" in counted.json()["message"]
    v2 = exchange(gateway.port, request_bytes("POST", V2_PATH, [("X-C", "1")] * 150))
    assert_refused_431(v2, v2=True)
    # Without the bounds 8 such requests took the gateway past 700 MiB.
    assert rss_bytes(gateway.pid) < before + 100 * 1024 * 1024
    assert httpx.get(gateway.url + "/healthz").status_code == 200


def test_a_request_that_is_not_http_gets_400_in_stabilitys_shape(gateway: GatewayProcess) -> None:
    response = exchange(gateway.port, b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n")
    assert response.status == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["name"] == "bad_request"


@pytest.mark.parametrize(
    "setting",
    ["max_header_bytes = 10", "max_headers = 0", "max_connections = 0",
     "header_timeout_seconds = 0", "body_timeout_seconds = -1", "workers = 0"],
)  # fmt: skip
def test_server_limit_settings_out_of_range_are_refused(tmp_path: Path, setting: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[gateway]\n{setting}\n")
    with pytest.raises(ConfigError, match=r"\[gateway\]"):
        load_settings(path, environ={})


def test_server_limit_settings_come_from_the_environment() -> None:
    env = {"STABILITY_GATEWAY_MAX_CONNECTIONS": "7", "STABILITY_GATEWAY_MAX_HEADER_BYTES": "4096",
           "STABILITY_GATEWAY_MAX_HEADERS": "9", "STABILITY_GATEWAY_HEADER_TIMEOUT": "1.5",
           "STABILITY_GATEWAY_BODY_TIMEOUT": "2", "STABILITY_GATEWAY_WORKERS": "3",
           "STABILITY_GATEWAY_CONFIG": ""}  # fmt: skip
    g = load_settings(environ=env).gateway
    assert ServerLimits.from_settings(g) == ServerLimits(7, 4096, 9, 1.5, 2.0)
    assert g.workers == 3


def test_requests_within_the_bounds_are_served_whole(gateway: GatewayProcess) -> None:
    """60 KiB of headers, 99 of them, then a 300 KiB body arriving in the same reads:
    nothing of it counts against the header bound once the headers are complete."""
    headers = [("Content-Type", "application/json"), ("X-Pad", "p" * 60_000)]
    headers += [(f"X-{i}", "1") for i in range(96)]
    body = (BODY + " " * 300_000).encode()
    response = exchange(gateway.port, request_bytes("POST", PATH, headers, body))
    assert response.status == 200, response
    assert response.json()["artifacts"]
    # The bound is per request: three 40 KiB requests on one connection, two of them
    # pipelined in a single write, are all answered.
    sock = connect(gateway.port)
    try:
        padded = request_bytes("GET", "/healthz", [("X-Pad", "p" * 40_000)])
        sock.sendall(padded)
        assert read_response(sock).status == 200
        sock.sendall(padded + padded)
        data = b""
        while data.count(b"HTTP/1.1 200") < 2:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
    finally:
        sock.close()


def test_slowloris_connections_are_closed_after_the_header_timeout(
    gateway: GatewayProcess,
) -> None:
    """300 connections each sending its headers a byte at a time, and 50 that send nothing:
    all are closed after the 1 s header timeout; /healthz answers all the while."""
    slow = [connect(gateway.port) for _ in range(300)]
    idle = [connect(gateway.port) for _ in range(50)]
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    stop = threading.Event()

    def drip() -> None:  # one more byte per connection every 0.2 s, for ever
        while not stop.wait(0.2):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(b"a")

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    health: list[int] = []
    try:
        with httpx.Client(timeout=5) as client:
            deadline = time.monotonic() + 20
            closed: set[socket.socket] = set()
            while time.monotonic() < deadline and len(closed) < len(slow) + len(idle):
                health.append(client.get(gateway.url + "/healthz").status_code)
                for sock in slow + idle:
                    if sock not in closed and wait_closed(sock, 0.001):
                        closed.add(sock)
                time.sleep(0.05)
    finally:
        stop.set()
        dripper.join(5)
        for sock in slow + idle:
            sock.close()
    assert len(closed) == len(slow) + len(idle)
    assert health and set(health) == {200}


def test_a_slowloris_connection_is_answered_408_before_it_is_closed(
    gateway: GatewayProcess,
) -> None:
    sock = connect(gateway.port)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        response = read_response(sock)
        closed = wait_closed(sock, 10)
    finally:
        sock.close()
    assert response.status == 408 and closed
    assert response.json()["name"] == "request_timeout"


def test_a_body_that_stops_arriving_gets_408_and_the_connection_is_closed(
    gateway: GatewayProcess,
) -> None:
    sock = connect(gateway.port)
    try:
        head = request_bytes("POST", PATH, [("Content-Type", "application/json")],
                             BODY[:10].encode(), content_length=len(BODY))  # fmt: skip
        sock.sendall(head)
        response = read_response(sock)
        closed = wait_closed(sock, 10)
    finally:
        sock.close()
    assert response.status == 408, response
    assert response.headers["connection"] == "close" and closed
    assert response.json()["name"] == "request_timeout"
    assert "body" in response.json()["message"]
    # A whole body arriving at once is not affected.
    assert httpx.post(gateway.url + PATH, content=BODY).status_code == 200


def test_the_connection_bound_holds_and_healthz_works_up_to_it(tmp_path: Path) -> None:
    """A bound of 20: with 19 connections held, /healthz (the 20th) answers; with 20 held,
    a new connection gets 503 in Stability's shape; once some close, it answers again."""
    env = gateway_env(tmp_path / "cache", mode="offline", max_connections=20,
                      header_timeout=60)  # fmt: skip
    with GatewayProcess(env, log_dir=tmp_path) as gateway:
        held: list[socket.socket] = []

        def hold() -> None:
            """A connection that finished one request and started the next (so neither the
            keep-alive timeout nor the header timeout closes it during the test)."""
            for _ in range(50):  # a probe's connection may not be counted out yet: retry
                sock = connect(gateway.port)
                sock.sendall(request_bytes("GET", "/healthz"))
                if read_response(sock).status == 200:
                    sock.sendall(b"GET /heal")
                    held.append(sock)
                    return
                sock.close()
                time.sleep(0.1)
            raise AssertionError("could not open a connection below the bound")

        def probe_until(status: int) -> int:
            deadline = time.monotonic() + 10
            while True:
                got = httpx.get(gateway.url + "/healthz", timeout=5)
                if got.status_code == status or time.monotonic() > deadline:
                    return got.status_code
                time.sleep(0.1)

        try:
            for _ in range(19):
                hold()
            assert probe_until(200) == 200
            hold()
            busy = httpx.get(gateway.url + "/healthz", timeout=5)
            assert busy.status_code == 503
            assert busy.json()["name"] == "too_many_connections"
            assert busy.headers["connection"] == "close"
            v2 = httpx.post(gateway.url + V2_PATH, timeout=5)
            assert v2.status_code == 503 and "errors" in v2.json()
            for sock in held[:2]:
                sock.close()
            assert probe_until(200) == 200
        finally:
            for sock in held:
                sock.close()
        assert "max_connections = 20" in gateway.logs()
