"""HTTP/1.1 over a bare socket, for tests of what an HTTP client library will not send:
huge or numerous headers, requests that stop half-way, connections held open.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int | None  # None: the connection ended without a status line
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed (or reset) the connection after answering

    def json(self) -> Any:
        return json.loads(self.body)


def parse_response(data: bytes, closed: bool) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        return RawResponse(None, {}, data, closed)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, body, closed)


def connect(port: int, timeout: float = 15.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket, timeout: float = 15.0) -> RawResponse:
    """Read one response: up to its Content-Length, or to EOF / reset / timeout."""
    sock.settimeout(timeout)
    data = b""
    closed = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        except TimeoutError:
            break
        if not chunk:
            closed = True
            break
        data += chunk
        _head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = parse_response(data, False).headers.get("content-length")
            if length is not None and len(body) >= int(length):
                break
    return parse_response(data, closed)


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """True once the server has closed the connection (what it sent first is dropped)."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def exchange(port: int, request: bytes, timeout: float = 15.0) -> RawResponse:
    """Send `request` (from a thread, so a server that answers early is read while the
    rest is still being sent, and a reset is tolerated) and read the answer."""
    sock = connect(port, timeout)

    def send() -> None:
        # OSError: the server stopped reading; it has answered, or will close.
        with contextlib.suppress(OSError):
            sock.sendall(request)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        response = read_response(sock, timeout)
    finally:
        sock.close()
        sender.join(timeout)
    return response


def request_bytes(
    method: str,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    *,
    content_length: int | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if body or content_length is not None:
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
