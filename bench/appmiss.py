"""The app's own CPU per cache miss, in process: no sockets, no uvicorn, no load generator.

    python -m bench.appmiss [--misses 500] [--rounds 3] [--profile N]

The real app (as `python -m bench.apphit` builds it: local backend in a fresh folder, the
default log level writing to /dev/null, unthrottled, on uvloop as `serve` runs) in front of
an `httpx.MockTransport` that gives every call the same v1 answer at once; each request
carries a new seed, so each is a miss with everything a miss does (parse, key, lookup, lease,
rate-limit slot, the upstream call through httpx, decode, pixel check, answer; the store
after it). Printed: the
process's CPU time per miss (all threads, the store included) for the small and the 2.6 MB
image, median of the rounds, and how many calls per miss went to a worker thread.
`--profile N` prints cProfile's N costliest functions (cumulative) of small misses.

The bench's miss section measures the same misses over HTTP, against a bare uvicorn + httpx
proxy: the difference between that proxy and this figure is the gateway's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import json
import pstats
import statistics
import time
from typing import Any

import anyio.to_thread
import uvloop

from bench.apphit import Caller, _answer, _app
from bench.upstream import generation_body


class Misses:
    """Miss after miss through ASGI: the benchmark request with a new seed each time."""

    def __init__(self, app: Any) -> None:
        self.call = Caller(app, "application/json")
        self.seed = 5_000_000

    async def __call__(self) -> None:
        self.seed += 1
        body = json.dumps(generation_body("an in-process miss", self.seed)).encode()
        self.call.body = body
        self.call.headers = [h for h in self.call.headers if h[0] != b"content-length"]
        self.call.headers.append((b"content-length", str(len(body)).encode()))
        status, cache = await self.call()
        assert (status, cache) == (200, "MISS"), (status, cache)


def counting_thread_hops() -> collections.Counter[str]:
    """Count anyio.to_thread.run_sync calls by the function sent to the thread."""
    hops: collections.Counter[str] = collections.Counter()
    real = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops[getattr(func, "__qualname__", repr(func))] += 1
        return await real(func, *args, **kwargs)

    anyio.to_thread.run_sync = counted  # type: ignore[assignment]
    return hops


async def _measure(noisy: bool, misses: int, profile: int) -> float:
    with _app(True, _answer(noisy)) as app:
        async with app.router.lifespan_context(app):
            miss = Misses(app)
            for _ in range(50):  # warm up: imports, connections, SQLite pages
                await miss()
            await asyncio.sleep(0.5)
            started = time.process_time()
            for _ in range(misses):
                await miss()
            await asyncio.sleep(0.5)  # the last stores, after their answers
            per_miss = (time.process_time() - started) / misses * 1000
            if profile:
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(misses):
                    await miss()
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(profile)
            return per_miss


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.appmiss")
    parser.add_argument("--misses", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    hops = counting_thread_hops()
    rows = []
    for image, noisy in (("small", False), ("2.6 MB", True)):
        hops.clear()
        samples = [uvloop.run(_measure(noisy, args.misses, 0)) for _ in range(args.rounds)]
        sent = (args.misses + 50) * args.rounds
        rows.append((image, statistics.median(samples), sum(hops.values()) / sent))
    print(f"app CPU per miss, in process, median of {args.rounds} rounds of {args.misses} misses")
    print(f"{'image':<8} {'CPU per miss':>13} {'thread hops per miss':>21}")
    for image, per_miss, hop_count in rows:
        print(f"{image:<8} {per_miss:>10.2f} ms {hop_count:>21.1f}")
    print("thread hops by function, 2.6 MB rounds:", dict(hops))
    if args.profile:
        uvloop.run(_measure(False, args.misses, args.profile))


if __name__ == "__main__":
    main()
