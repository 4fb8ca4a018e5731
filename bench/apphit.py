"""The app's own CPU per cache hit, in process: no sockets, no uvicorn, no load generator.

    python -m bench.apphit [--hits 5000] [--rounds 3] [--profile N]

The real app (`create_app`, the local backend in a fresh folder, online mode, the default
log level with its redaction filter, writing to /dev/null) in front of an
`httpx.MockTransport` answering the bench's 2.6 MB image once; then the benchmark's hit
request is called straight through ASGI, `--hits` times per round, and the process's CPU
time per hit is printed, for PNG and JSON answers, with the parse memo
(gateway.parse_memo) on and, as the baseline of the same run, off. Rounds alternate
between the variants, and the median of the rounds is shown. This is the part of a hit
the gateway's own code decides, and it moves much less with other load than the
`python -m bench` hit section, where the kernel's sending of 2.6 MB and wrk dominate.
`--profile N` prints cProfile's N busiest functions of a PNG hit with the memo on.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import logging
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.upstream import TEXT_TO_IMAGE, hit_body
from tests.fakes.images import png_bytes

KEY = "sk-bench-apphit"


def _answer(noisy: bool = True) -> bytes:
    image = base64.b64encode(png_bytes(1344, 768, seed=1, noisy=noisy)).decode()
    return json.dumps(
        {"artifacts": [{"base64": image, "seed": 1, "finishReason": "SUCCESS"}]}
    ).encode()


@contextmanager
def _app(memo: bool, answer: bytes | None = None) -> Iterator[Any]:
    """The app in front of a MockTransport that gives `answer` (default: the 2.6 MB image's
    v1 JSON) to every call; unthrottled, so that misses are not paced by the limiter."""
    import gateway.pipeline
    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.logs import configure_logging
    from gateway.parse_memo import ParseMemo

    folder = tempfile.mkdtemp(prefix="apphit-")
    os.environ.update({
        "STABILITY_GATEWAY_CACHE_DIR": f"{folder}/cache", "STABILITY_GATEWAY_MODE": "online",
        "STABILITY_API_KEY": KEY, "STABILITY_GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9",
        "STABILITY_GATEWAY_RATE_LIMIT": "150", "STABILITY_GATEWAY_RATE_PERIOD": "0.1",
        "STABILITY_GATEWAY_RATE_MARGIN": "0",
    })  # fmt: skip
    settings = load_settings()
    configure_logging("info", [KEY])
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)
    answer = answer or _answer()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, content=answer, headers={"content-type": "application/json"}
        )
    )
    original = gateway.pipeline.ParseMemo
    if not memo:
        gateway.pipeline.ParseMemo = lambda: ParseMemo(entries=0)  # type: ignore[assignment,misc]
    try:
        yield create_app(settings, transport=transport)
    finally:
        gateway.pipeline.ParseMemo = original  # type: ignore[misc]
        devnull.close()


class Caller:
    """One hit request through ASGI, as uvicorn would call the app."""

    def __init__(self, app: Any, accept: str) -> None:
        self.app = app
        self.body = hit_body()
        self.headers = [
            (b"host", b"127.0.0.1:8000"), (b"accept", accept.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
        ]  # fmt: skip

    async def __call__(self) -> tuple[int, str]:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": TEXT_TO_IMAGE, "raw_path": TEXT_TO_IMAGE.encode(),
            "root_path": "", "query_string": b"", "headers": self.headers,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        given = False
        start: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": self.body, "more_body": False}
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)

        await self.app(scope, receive, send)
        cache = dict(start.get("headers", [])).get(b"x-cache", b"").decode()
        return int(start.get("status", 0)), cache


async def _measure(memo: bool, accept: str, hits: int, rounds: int, profile: int) -> list[float]:
    with _app(memo) as app:
        async with app.router.lifespan_context(app):
            call = Caller(app, accept)
            status, cache = await call()
            assert status == 200 and cache == "MISS", (status, cache)
            await asyncio.sleep(0.5)  # the entry is stored after the answer
            for _ in range(200):
                status, cache = await call()
            assert status == 200 and cache == "HIT", (status, cache)
            per_hit = []
            for _ in range(rounds):
                started = time.process_time()
                for _ in range(hits):
                    await call()
                per_hit.append((time.process_time() - started) / hits * 1e6)
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(min(hits, 2000)):
                    await call()
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(profile)
            return per_hit


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apphit")
    parser.add_argument("--hits", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    rows = []
    for accept in ("image/png", "application/json"):
        samples: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):  # alternate, so that a busy moment hits both
            for memo in (True, False):
                samples[memo] += asyncio.run(_measure(memo, accept, args.hits, 1, 0))
        on, off = statistics.median(samples[True]), statistics.median(samples[False])
        rows.append((accept, on, off))
    print(f"app CPU per hit, in process, median of {args.rounds} rounds of {args.hits} hits")
    print(f"{'Accept':<18} {'memo on':>10} {'memo off':>10} {'on / off':>9}")
    for accept, on, off in rows:
        print(f"{accept:<18} {on:>8.0f} us {off:>8.0f} us {on / off:>8.2f}x")
    if args.profile:
        asyncio.run(_measure(True, "image/png", args.hits, 1, args.profile))


if __name__ == "__main__":
    main()
