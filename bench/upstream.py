"""The fake Stability upstream, as the bench uses it, and the request bodies every contender gets.

The fake is the test suite's `FakeStability`, unchanged. The bench only configures it: its
default behaviour (image size class, latency) and, for the limiter section, an ASGI wrapper
in front of its app that answers 429 like Stability does when a sliding window holds more
calls than the limit, and records every arrival, refused or not.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tests.fakes import FakeStability
from tests.fakes.stability import Behaviour, is_generation

ENGINE = "stable-diffusion-xl-1024-v1-0"
TEXT_TO_IMAGE = f"/v1/generation/{ENGINE}/text-to-image"
WIDTH, HEIGHT = 1344, 768
HIT_SEED = 424242
SEED_PLACEHOLDER = "__SEED__"
NEGATIVE = "blurry, low quality, distorted, watermark"
STYLE = "cinematic lighting, 4k quality"


def generation_body(prompt: str, seed: int | str) -> dict[str, Any]:
    """A text-to-image request as the video pipeline's client sends it (16:9 SDXL size)."""
    return {
        "text_prompts": [
            {"text": f"{prompt}, {STYLE}", "weight": 1},
            {"text": NEGATIVE, "weight": -1},
        ],
        "width": WIDTH,
        "height": HEIGHT,
        "cfg_scale": 8,
        "steps": 40,
        "samples": 1,
        "seed": seed,
    }


def hit_body() -> bytes:
    """The one benchmark request every hit measurement repeats (a fixed seed)."""
    return json.dumps(generation_body("A serene mountain lake at dawn", HIT_SEED)).encode()


def unique_body_template() -> bytes:
    """The same request with `__SEED__` where the seed goes; wrk fills in a new one each time."""
    text = json.dumps(generation_body("A serene mountain lake at dawn", SEED_PLACEHOLDER))
    return text.replace(f'"{SEED_PLACEHOLDER}"', SEED_PLACEHOLDER).encode()


def write_bodies(folder: Path) -> tuple[Path, Path]:
    """(fixed body file, unique-seed template file) for wrk's Lua script."""
    folder.mkdir(parents=True, exist_ok=True)
    fixed, unique = folder / "hit.json", folder / "unique.json"
    fixed.write_bytes(hit_body())
    unique.write_bytes(unique_body_template())
    return fixed, unique


class UpstreamRateLimit:
    """Pure ASGI middleware: Stability's 429 when more than `limit` generation calls arrive
    within `period` seconds (a sliding window, no slack), recording every arrival.

    The fake itself never refuses for rate; this makes "upstream 429s seen" a measurement
    rather than a constant zero.
    """

    def __init__(self, app: ASGIApp, *, limit: int, period: float) -> None:
        self.app = app
        self.limit = limit
        self.period = period
        self._lock = threading.Lock()
        self._window: deque[float] = deque()
        self._arrivals: list[float] = []
        self._refused = 0

    @property
    def arrivals(self) -> list[float]:
        with self._lock:
            return list(self._arrivals)

    @property
    def refused(self) -> int:
        with self._lock:
            return self._refused

    def _admit(self, now: float) -> bool:
        with self._lock:
            self._arrivals.append(now)
            while self._window and self._window[0] <= now - self.period:
                self._window.popleft()
            self._window.append(now)
            if len(self._window) > self.limit:
                self._refused += 1
                return False
            return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_generation(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._admit(time.time()):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"id": uuid.uuid4().hex, "name": "rate_limit_exceeded", "message": "too many requests"}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running_fake(
    default: Behaviour, limit: tuple[int, float] | None = None
) -> Iterator[FakeStability]:
    """A running FakeStability answering `default` (served by the tests' ThreadedServer, which
    sets TCP_NODELAY on its listener, so no answer waits for a delayed ACK); with `limit`,
    behind UpstreamRateLimit (reach it as `fake.app`)."""
    fake = FakeStability()
    fake.default = default
    if limit is not None:
        fake.app = UpstreamRateLimit(fake.app, limit=limit[0], period=limit[1])
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def generation_count(fake: FakeStability) -> int:
    """Generation calls the fake has received so far (account routes excluded)."""
    return len(fake.generation_calls())
