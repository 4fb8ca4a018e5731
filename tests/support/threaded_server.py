"""An ASGI app served by uvicorn on a background thread, on 127.0.0.1: what the fake
Stability server runs on, in the tests and in bench/.

The listening socket is made with IPPROTO_TCP and TCP_NODELAY (Linux hands it to every
connection it accepts), so an answer written in pieces never waits ~40 ms for a delayed ACK.
`stopping` is set when the server is asked to stop, so an app that sleeps on purpose (a
scripted hang) can wake up instead of holding the shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class ThreadedServer:
    def __init__(
        self,
        app: ASGIApp,
        *,
        port: int = 0,
        name: str = "server",
        http: Any = "h11",
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> None:
        """`http`: uvicorn's protocol (name or class); `loop_factory`: the event loop's
        (default: asyncio's own)."""
        self.app = app
        self.http = http
        self.loop_factory = loop_factory
        self.requested_port = port
        self.name = name
        self.port = 0
        self.stopping: asyncio.Event | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Serve; return once the server accepts connections."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", self.requested_port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            http=self.http,
            log_level="warning",
            log_config=None,  # leave logging alone: records propagate to pytest's capture
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=self._run, args=(server, sock), daemon=True)
        self._thread.name = f"{self.name}-{self.port}"
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                sock.close()
                raise RuntimeError(f"{self.name} did not start")
            time.sleep(0.005)

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        with asyncio.Runner(loop_factory=self.loop_factory) as runner:
            runner.run(self._serve(server, sock))

    async def _serve(self, server: uvicorn.Server, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        await server.serve(sockets=[sock])  # closes sock on shutdown

    def stop(self) -> None:
        """Stop serving, set `stopping`, and wait for the thread (and the port) to close."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        loop, stopping = self._loop, self.stopping
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError(f"{self.name} server thread did not stop")
        self._server = self._thread = self._loop = None
        self.stopping = None
