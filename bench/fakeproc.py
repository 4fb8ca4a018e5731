"""The rate-enforcing fake upstream in a process of its own (the limiter section's).

    python -m bench.fakeproc --serve PORT --latency S --limit N --period S

`UpstreamRateLimit` stamps each arrival when uvicorn hands it the request. In the bench's
own process that stamp waits for the GIL while the load client parses answers, so
requests written over a few hundred milliseconds could be stamped as one late block and
counted in the wrong window. (Measured with the gateway logging when each request was
written: up to 44 ms between a write and its stamp, when everything ran in one process.)
Here the only Python work in the fake's process is the fake itself, as for the real
upstream. `GET /_bench/arrivals` answers {"arrivals": [...], "refused": n}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx
from starlette.types import Receive, Scope, Send

from bench.servers import running_module
from bench.upstream import UpstreamRateLimit
from tests.fakes import FakeStability
from tests.fakes.stability import ok

ARRIVALS = "/_bench/arrivals"


class WithArrivals:
    """Answers GET /_bench/arrivals from the enforcer; everything else goes on to it."""

    def __init__(self, enforcer: UpstreamRateLimit) -> None:
        self.enforcer = enforcer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        enforcer = self.enforcer
        if scope["type"] != "http" or scope["path"] != ARRIVALS:
            await enforcer(scope, receive, send)
            return
        body = json.dumps({"arrivals": enforcer.arrivals, "refused": enforcer.refused}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def serve(port: int, latency: float, limit: int, period: float) -> None:
    fake = FakeStability(port=port)
    fake.default = ok(delay=latency)
    fake.app = WithArrivals(UpstreamRateLimit(fake.app, limit=limit, period=period))
    fake.start()
    while True:  # until the bench terminates it
        time.sleep(3600)


@dataclass(frozen=True)
class FakeProcess:
    url: str

    def arrivals(self) -> tuple[list[float], int]:
        """(every generation call's arrival time, how many were refused with 429)."""
        answer = httpx.get(self.url + ARRIVALS, timeout=30).json()
        return [float(t) for t in answer["arrivals"]], int(answer["refused"])


@contextlib.contextmanager
def running(latency: float, limit: int, period: float) -> Iterator[FakeProcess]:
    args = ("--latency", str(latency), "--limit", str(limit), "--period", str(period))
    with running_module("bench.fakeproc", *args, probe=ARRIVALS) as (port, _pid):
        yield FakeProcess(f"http://127.0.0.1:{port}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fakeproc", description=__doc__)
    p.add_argument("--serve", type=int, required=True, metavar="PORT")
    p.add_argument("--latency", type=float, required=True)
    p.add_argument("--limit", type=int, required=True)
    p.add_argument("--period", type=float, required=True)
    args = p.parse_args(argv)
    serve(args.serve, args.latency, args.limit, args.period)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
