"""Does the shape of a hit's send matter? One buffer against slices, PNG against JSON.

    python -m bench.sendshape [--seconds 10] [--connections 64] [--workers 1] [--only png,json]

Not part of `python -m bench`: it answers one question of the JSON-hit target. A JSON hit
sends the upstream's base64 (about 1.34 times the PNG's bytes), already built and held by
the memory tier, as one `http.response.body` message; the alternative is to hand uvicorn
slices of it (`more_body`), which bounds each write but adds a message, a write and a
flow-control wait per slice. This serves the same bytes from memory in each shape under
uvicorn (httptools, one worker, as `stability-gateway serve` runs) with nothing else on the
path, loads each with wrk -c64, and prints req/s, MB/s and the ratio to the PNG sent as one
buffer: the JSON/PNG ratio of one buffer is the byte bound this machine gives a hit, measured.
With `--workers 2 --only png` it is the most any app under uvicorn could answer of the
bench's PNG hit with two workers (nothing done per request but the send).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from bench import tools, wrk
from bench.servers import running_module
from bench.upstream import write_bodies

WORK = Path(__file__).resolve().parent / "work" / "sendshape"
# (path, body, slice size or 0 for one buffer)
SHAPES = (
    ("png", "png", 0),
    ("json", "json", 0),
    ("json-1m", "json", 1 << 20),
    ("json-256k", "json", 256 << 10),
    ("json-64k", "json", 64 << 10),
)


def bodies() -> dict[str, bytes]:
    """The bench's image (the fake's noisy 1344x768 PNG) and its v1 JSON answer."""
    from tests.fakes.images import png_bytes

    png = png_bytes(1344, 768, seed=3, noisy=True)
    text = base64.b64encode(png).decode()
    answer = {"artifacts": [{"base64": text, "seed": 5, "finishReason": "SUCCESS"}]}
    return {"png": png, "json": json.dumps(answer).encode()}


def make_app() -> object:
    """A raw ASGI app: every shape in SHAPES at /<name>, bodies built once at start."""
    held = bodies()
    shapes = {f"/{name}": (held[body], size) for name, body, size in SHAPES}
    types = {"png": b"image/png", "json": b"application/json"}

    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        assert scope["type"] == "http"
        path = str(scope["path"])
        body, size = shapes[path]
        kind = types["png" if path == "/png" else "json"]
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
        if not size:
            await send({"type": "http.response.body", "body": body})  # type: ignore[operator]
            return
        view = memoryview(body)
        for at in range(0, len(body), size):
            last = at + size >= len(body)
            piece = bytes(view[at : at + size])
            await send({"type": "http.response.body", "body": piece, "more_body": not last})  # type: ignore[operator]

    return app


def serve(port: int, workers: int = 1) -> None:
    import uvicorn

    uvicorn.run(
        "bench.sendshape:make_app", factory=True, workers=workers, host="127.0.0.1",
        port=port, http="httptools", log_level="warning",
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sendshape", description=__doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=1, help="uvicorn workers (as --workers)")
    p.add_argument("--only", default="", help="shapes to run, comma-separated (png,json,...)")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.workers)
        return 0
    wrk_path = tools.ensure_tools([])["wrk"]
    WORK.mkdir(parents=True, exist_ok=True)
    body_file, _ = write_bodies(WORK)
    chosen = set(args.only.split(",")) if args.only else {name for name, _b, _s in SHAPES}
    workers = ("--workers", str(args.workers))
    with running_module("bench.sendshape", *workers, probe="/png") as (port, _pid):
        url = f"http://127.0.0.1:{port}"
        rows = []
        for name, _body, size in SHAPES:
            if name not in chosen:
                continue
            job = wrk.WrkJob(
                url=f"{url}/{name}", body_file=body_file, accept="*/*",
                connections=args.connections, threads=2, duration=args.warmup,
            )  # fmt: skip
            if args.warmup:
                wrk.run(wrk_path, job)
            measured = wrk.run(wrk_path, dataclasses.replace(job, duration=args.seconds))
            rows.append((name, size, measured))
    base = rows[0][2].rps  # the first shape run (png, unless left out)
    print(f"{'shape':<10} {'slice':>8} {'req/s':>8} {'MB/s':>8} {'p99 ms':>8} {'/ png':>6} failed")
    for name, size, r in rows:
        mbps = r.bytes / r.duration_s / 1e6
        slice_text = f"{size >> 10} KiB" if size else "one"
        print(
            f"{name:<10} {slice_text:>8} {r.rps:8.1f} {mbps:8.0f} {r.latency_ms['p99']:8.1f}"
            f" {r.rps / base:6.2f} {r.failed}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
