"""ASGI's zero-copy send (gateway.http.zerocopy) in the gateway's own uvicorn protocol, for
real: uvicorn on a loopback port with LimitedHttpToolsProtocol, on uvloop (what `serve`
runs) and on asyncio's own loop, and a small app that answers with files."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvloop
from starlette.types import Receive, Scope, Send

from gateway.cli.server_limits import LimitedHttpToolsProtocol
from gateway.http import zerocopy
from tests.fakes.raw_http import connect, parse_response, request_bytes
from tests.support.threaded_server import ThreadedServer

SIZE = 3 * 1024 * 1024 + 17  # more than a loopback socket takes at once
MEMORY = bytes(range(256)) * (32 * 1024 * 4)  # 32 MiB answered from memory: past the buffers


class FileApp:
    """/file: `path` sent with the extension; /short: Content-Length 1000 bytes past the
    file's end; /big: big.bin beside it; /memory: MEMORY as a plain body; /prefixed:
    MEMORY as a first body message, then the file. Records whether each scope offered it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offered: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.offered.append(zerocopy.offered(scope))
        if scope["path"] == "/memory":
            await send(start(len(MEMORY)))
            await send({"type": "http.response.body", "body": MEMORY})
            return
        if scope["path"] == "/prefixed":  # MEMORY, then the file, in one answer
            with self.path.open("rb") as file:
                await send(start(len(MEMORY) + SIZE))
                await send({"type": "http.response.body", "body": MEMORY, "more_body": True})
                await send({"type": zerocopy.EXTENSION, "file": file})
            return
        path = self.path.with_name("big.bin") if scope["path"] == "/big" else self.path
        length = path.stat().st_size + (1000 if scope["path"] == "/short" else 0)
        with path.open("rb") as file:
            await send(start(length))
            await send({"type": zerocopy.EXTENSION, "file": file, "count": length})


def start(length: int) -> dict[str, Any]:
    headers = [(b"content-type", b"image/png"), (b"content-length", str(length).encode())]
    return {"type": "http.response.start", "status": 200, "headers": headers}


@pytest.fixture
def blob(tmp_path: Path) -> Path:
    path = tmp_path / "blob.png"
    path.write_bytes(os.urandom(SIZE))
    return path


@pytest.fixture(params=["uvloop", "asyncio"])
def server(request: pytest.FixtureRequest, blob: Path) -> Iterator[tuple[ThreadedServer, FileApp]]:
    app = FileApp(blob)
    factory = uvloop.new_event_loop if request.param == "uvloop" else None
    running = ThreadedServer(app, http=LimitedHttpToolsProtocol, loop_factory=factory)
    running.start()
    try:
        yield running, app
    finally:
        running.stop()


@pytest.fixture
def sendfile_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each os.sendfile call's byte count (the server runs in this process)."""
    calls: list[int] = []
    real = os.sendfile

    def counting(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", counting)
    return calls


def test_a_file_is_sent_by_the_kernel_and_arrives_whole(
    server: tuple[ThreadedServer, FileApp], blob: Path, sendfile_calls: list[int]
) -> None:
    running, app = server
    with httpx.Client(base_url=running.url, timeout=30) as client:
        answers = [client.get("/file") for _ in range(3)]  # one connection, kept alive
    for answer in answers:
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(SIZE)
        assert answer.content == blob.read_bytes()
    assert app.offered == [True, True, True]
    assert sendfile_calls, "the file's bytes did not go through os.sendfile"


def test_head_sends_the_headers_and_no_body(
    server: tuple[ThreadedServer, FileApp], sendfile_calls: list[int]
) -> None:
    running, _ = server
    with httpx.Client(base_url=running.url, timeout=30) as client:
        head = client.head("/file")
        after = client.get("/file")  # the connection is still in step
    assert head.status_code == 200 and head.headers["content-length"] == str(SIZE)
    assert head.content == b""
    assert len(after.content) == SIZE


def test_a_file_shorter_than_its_answer_breaks_the_connection_off(
    server: tuple[ThreadedServer, FileApp], caplog: pytest.LogCaptureFixture
) -> None:
    running, _ = server
    with (
        caplog.at_level(logging.WARNING, logger="gateway.zerocopy"),
        httpx.Client(base_url=running.url, timeout=30) as client,
    ):
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/short")  # never a short body that looks whole
        assert len(client.get("/file").content) == SIZE  # a new connection is fine
    assert f"after {SIZE} of its {SIZE + 1000} bytes" in caplog.text


def test_a_pipelined_file_waits_for_the_answer_before_it(
    server: tuple[ThreadedServer, FileApp], blob: Path
) -> None:
    """A request pipelined behind a 32 MiB answer from memory gets its file whole, after
    that answer's last byte."""
    running, _ = server
    sock = connect(running.port)
    try:
        sock.sendall(request_bytes("GET", "/memory") + request_bytes("GET", "/file"))
        time.sleep(0.5)  # read nothing yet: the first answer backs up in the server
        data = b""
        want = len(MEMORY) + SIZE
        while len(data) < want + 200:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
            if data.count(b"HTTP/1.1 200") == 2 and data.endswith(blob.read_bytes()[-64:]):
                break
    finally:
        sock.close()
    first_head, _, rest = data.partition(b"\r\n\r\n")
    first = parse_response(first_head + b"\r\n\r\n" + rest[: len(MEMORY)], False)
    assert first.status == 200 and first.body == MEMORY
    second = parse_response(rest[len(MEMORY) :], False)
    assert second.status == 200 and second.body == blob.read_bytes()


def test_a_file_after_bytes_still_in_the_buffer_follows_them(
    server: tuple[ThreadedServer, FileApp], blob: Path
) -> None:
    """32 MiB written as a first body message fill the socket and wait in uvicorn's buffer
    when the file comes: the file's bytes must come after them, not in the middle."""
    running, _ = server
    with httpx.Client(base_url=running.url, timeout=30) as client:
        answer = client.get("/prefixed")
    assert answer.content == MEMORY + blob.read_bytes()


def test_http_1_0_gets_the_file_and_then_the_connection_closes(
    server: tuple[ThreadedServer, FileApp], blob: Path, sendfile_calls: list[int]
) -> None:
    running, _ = server
    sock = connect(running.port)
    try:
        sock.sendall(b"GET /file HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    finally:
        sock.close()
    answer = parse_response(data, True)
    assert answer.status == 200 and answer.body == blob.read_bytes()
    assert sendfile_calls


def test_a_caller_that_stops_reading_is_broken_off_after_the_stall_bound(
    server: tuple[ThreadedServer, FileApp],
    blob: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past what the socket buffers hold, the rest waits on uvicorn's transport; a caller
    that takes nothing more for STALL_SECONDS is cut off, and the server serves on."""
    running, _ = server
    with blob.with_name("big.bin").open("wb") as big:
        big.truncate(256 * 1024 * 1024)  # sparse: far more than any socket buffer
    monkeypatch.setattr(zerocopy, "STALL_SECONDS", 0.5)
    sock = connect(running.port)
    try:
        with caplog.at_level(logging.INFO, logger="gateway.zerocopy"):
            sock.sendall(request_bytes("GET", "/big"))
            deadline = time.monotonic() + 20
            while "took no byte" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.1)
        assert "took no byte for 0.5 s" in caplog.text
        received = 0
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        assert received < 256 * 1024 * 1024  # cut off, not finished
    finally:
        sock.close()
    with httpx.Client(base_url=running.url, timeout=30) as client:
        assert len(client.get("/file").content) == SIZE
