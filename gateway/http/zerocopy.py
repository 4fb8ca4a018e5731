"""ASGI's zero-copy send extension for uvicorn's httptools protocol: a file sent with sendfile.

uvicorn offers no way to send a file but writing its bytes, so a hit served from the cache
folder cost a read of the image into memory and a copy of it into the socket (a third of
a cold hit's samples, `python -m bench.hitprofile --cold 108`). With this extension
(https://asgi.readthedocs.io/en/latest/extensions.html, `http.response.zerocopysend`), the
app hands over an open file and the kernel sends its pages from the page cache, as nginx
does. `offer` names the extension in a request's scope; `install` wraps that request's
uvicorn send so it also takes the message:

    {"type": "http.response.zerocopysend", "file": <open file>, "offset": 0, "count": n,
     "more_body": False}

The answer's headers were sent before, with its Content-Length. The file's bytes go out
only once everything written before them has left uvicorn's buffer (so nothing is sent out
of order), with the connection's reading paused (so nothing is written in the middle). A
file that ends before `count` bytes, or a socket that fails or takes no byte for
`STALL_SECONDS`, breaks the connection off: the caller never gets a short body that looks
whole. The same code runs on uvloop (which has no `loop.sendfile`) and on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import IO, Any, Protocol

from starlette.types import Message, Scope, Send

EXTENSION = "http.response.zerocopysend"
# A caller that takes no byte of an answer for this long has gone (or is a slow reader
# holding a file and a task open): the connection is broken off.
STALL_SECONDS = 60.0
# What goes through uvicorn's buffer when the socket is full (see _sendfile).
PIECE = 256 * 1024

log = logging.getLogger("gateway.zerocopy")


class Cycle(Protocol):
    """The parts of uvicorn's RequestResponseCycle this module uses."""

    scope: Any
    transport: asyncio.Transport
    flow: Any
    response_started: bool
    response_complete: bool
    disconnected: bool
    chunked_encoding: bool | None
    expected_content_length: int

    async def send(self, message: Any) -> None: ...


def offer(scope: Scope) -> None:
    """Name the extension in a request's scope (before the app sees it)."""
    scope.setdefault("extensions", {})[EXTENSION] = {}


def offered(scope: Scope) -> bool:
    return EXTENSION in (scope.get("extensions") or {})


def install(cycle: Cycle) -> None:
    """Make `cycle.send` take zero-copy messages too; every other message is uvicorn's."""
    plain: Send = cycle.send

    async def send(message: Message) -> None:
        if message["type"] == EXTENSION:
            await _send_file(cycle, plain, message)
        else:
            await plain(message)

    cycle.send = send  # type: ignore[method-assign]


async def _send_file(cycle: Cycle, plain: Send, message: Message) -> None:
    file: IO[bytes] = message["file"]
    offset = int(message.get("offset") or 0)
    count = message.get("count")
    if count is None:
        count = os.fstat(file.fileno()).st_size - offset
    more_body = bool(message.get("more_body", False))
    if cycle.disconnected or cycle.scope["method"] == "HEAD":
        await plain({"type": "http.response.body", "body": b"", "more_body": more_body})
        return
    if not cycle.response_started or cycle.response_complete or cycle.chunked_encoding:
        # A shape sendfile does not fit: uvicorn's own send takes the bytes, and raises
        # what it raises for a misuse.
        body = os.pread(file.fileno(), count, offset)
        await plain({"type": "http.response.body", "body": body, "more_body": more_body})
        return
    if count > cycle.expected_content_length:
        raise RuntimeError("Response content longer than Content-Length")
    transport = cycle.transport
    reading = transport.is_reading()
    transport.pause_reading()
    try:
        await _drained(cycle)
        sent = await _sendfile(cycle, file, offset, count)
    except OSError as exc:  # the caller went away, or the file could not be read
        log.info("broke off an answer sent from a file: %s", exc)
        transport.abort()
        return
    finally:
        if reading and not transport.is_closing():
            transport.resume_reading()
    if sent < count:
        log.warning(
            "the file of an answer ended after %d of its %d bytes: broke the answer off",
            sent,
            count,
        )
        transport.abort()
        return
    cycle.expected_content_length -= count
    await plain({"type": "http.response.body", "body": b"", "more_body": more_body})


async def _drained(cycle: Cycle) -> None:
    """Until uvicorn's write buffer is empty: lowered to 0, the buffer's high-water mark
    pauses the protocol now and resumes it when the last byte has left. A caller that
    takes no byte for STALL_SECONDS meanwhile is taken as gone."""
    transport = cycle.transport
    if transport.get_write_buffer_size() == 0:
        return
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        async with asyncio.timeout(STALL_SECONDS):
            await cycle.flow.drain()
    except TimeoutError:
        raise OSError(f"the caller took no byte for {STALL_SECONDS:g} s") from None
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)


async def _sendfile(cycle: Cycle, file: IO[bytes], offset: int, count: int) -> int:
    """Bytes sent of `file[offset:offset + count]`: fewer only if the file ended early.

    While the socket takes them, the kernel sends the file's pages itself. When it is full
    (a slow reader), the next piece goes through uvicorn's transport, which waits for the
    socket (neither loop lets anyone else watch a transport's socket), and sendfile goes
    on once that piece has left: a copy only for what a slow reader makes wait."""
    sock = cycle.transport.get_extra_info("socket").fileno()
    source = file.fileno()
    sent = 0
    while sent < count:
        if cycle.disconnected:
            raise OSError("the caller went away")
        try:
            n = os.sendfile(sock, source, offset + sent, count - sent)
        except BlockingIOError:
            n = len(piece := os.pread(source, min(PIECE, count - sent), offset + sent))
            if n:
                cycle.transport.write(piece)
                await _drained(cycle)
        if n == 0:
            break  # the file ended
        sent += n
    return sent
