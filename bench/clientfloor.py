"""What one upstream call costs the caller's CPU on this stack, layer by layer.

    python -m bench.clientfloor [--calls 1000] [--rounds 3]

The same small GET (a 30-byte JSON answer) to the fake upstream in a process of its own
(bench/fakeproc.py), on one keep-alive connection, through each layer the gateway's
upstream call goes through, on uvloop as `serve` runs:

- asyncio streams: the request's bytes written and the answer read by hand (the floor of
  any Python client on this event loop);
- httpcore's connection pool (h11 and anyio underneath), as httpx uses it;
- httpx's transport (AsyncHTTPTransport.handle_async_request, a request built once);
- httpx's client (AsyncClient.get: the request built, merged and sent);
- the gateway's UpstreamClient.send (retry loop, deadline, trace hook, headers), with a
  limiter that grants at once, then with the default one (the cache folder's shared log).

Printed: CPU time of this process per call (the fake's own is not counted), median of the
rounds. The miss section's targets (bench/README.md, "Where a miss's time goes") are read
against these: no miss can cost less than its upstream call.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpcore
import httpx
import uvloop

from bench.fakeproc import ARRIVALS, running

Call = Callable[[], Awaitable[None]]
Layer = Callable[[str], Awaitable[tuple[Call, Call]]]  # url -> (one call, close)


async def _per_call(call: Call, calls: int) -> float:
    for _ in range(50):  # warm: the connection made, code paths taken once
        await call()
    started = time.process_time()
    for _ in range(calls):
        await call()
    return (time.process_time() - started) / calls * 1000


async def _streams(url: str) -> tuple[Call, Call]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET {ARRIVALS} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()

    async def call() -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )  # fmt: skip
        await reader.readexactly(length)

    async def close() -> None:
        writer.close()

    return call, close


async def _httpcore(url: str) -> tuple[Call, Call]:
    pool = httpcore.AsyncConnectionPool()

    async def call() -> None:
        await pool.request("GET", url + ARRIVALS)

    return call, pool.aclose


async def _transport(url: str) -> tuple[Call, Call]:
    transport = httpx.AsyncHTTPTransport()
    request = httpx.Request("GET", url + ARRIVALS)

    async def call() -> None:
        response = await transport.handle_async_request(request)
        await response.aread()

    return call, transport.aclose


async def _client(url: str) -> tuple[Call, Call]:
    client = httpx.AsyncClient(base_url=url)

    async def call() -> None:
        (await client.get(ARRIVALS)).raise_for_status()

    return call, client.aclose


class _GrantAtOnce:
    """A limiter that never waits: the upstream call's own cost, without its slot."""

    async def acquire(self, ticket: Any = None) -> Any:
        from cache.interfaces import Slot

        return Slot(0.0, time.monotonic())

    async def restamp(self, slot: Any, late: float) -> None:
        pass

    async def cool_down(self, seconds: float) -> None:
        pass

    def queue_depth(self) -> int:
        return 0


async def _upstream_client(url: str, limiter: Any) -> tuple[Call, Call]:
    from gateway.config import Settings
    from gateway.deadline import Deadline
    from gateway.generation import UpstreamRequest
    from gateway.upstream import UpstreamClient

    settings = Settings(api_key="sk-bench").replace(
        gateway={"mode": "online", "upstream_url": url},
    )
    upstream = UpstreamClient(settings, limiter)
    request = UpstreamRequest("GET", ARRIVALS, route="bench")

    async def call() -> None:
        answer = await upstream.send(request, {}, deadline=Deadline(60))
        answer.response.raise_for_status()

    return call, upstream.aclose


async def _gateway(url: str) -> tuple[Call, Call]:
    return await _upstream_client(url, _GrantAtOnce())


async def _gateway_disk_limiter(url: str) -> tuple[Call, Call]:
    """With the default limiter (the cache folder's shared log, a SQLite transaction in a
    worker thread), at the bench's unthrottled 150 per 0.1 s: never waits here."""
    from cache.local.coordinator import LocalCoordinator

    folder = tempfile.mkdtemp(prefix="clientfloor-")
    coordinator = LocalCoordinator(folder, limit=150, period=0.1)
    call, close = await _upstream_client(url, coordinator.limiter)

    async def close_all() -> None:
        await close()
        await coordinator.close()
        shutil.rmtree(folder, ignore_errors=True)

    return call, close_all


LAYERS: tuple[tuple[str, Layer], ...] = (
    ("asyncio streams, by hand", _streams),
    ("httpcore connection pool", _httpcore),
    ("httpx transport", _transport),
    ("httpx client", _client),
    ("UpstreamClient.send, a slot at once", _gateway),
    ("UpstreamClient.send, the disk limiter", _gateway_disk_limiter),
)


async def _measure(url: str, calls: int) -> list[float]:
    figures = []
    for _name, make in LAYERS:
        call, close = await make(url)
        try:
            figures.append(await _per_call(call, calls))
        finally:
            await close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.clientfloor")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with running(0.0, 10**9, 1.0) as fake:
        rounds = [uvloop.run(_measure(fake.url, args.calls)) for _ in range(args.rounds)]
    print(f"CPU per upstream call, this process, median of {args.rounds} rounds of {args.calls}")
    width = max(len(name) for name, _ in LAYERS)
    floor = statistics.median(r[0] for r in rounds)
    for i, (name, _) in enumerate(LAYERS):
        per_call = statistics.median(r[i] for r in rounds)
        print(f"{name.ljust(width)}  {per_call:6.3f} ms  {per_call / floor:5.2f}x")


if __name__ == "__main__":
    main()
