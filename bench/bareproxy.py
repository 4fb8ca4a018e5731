"""The floor of a miss on this stack: uvicorn and httpx passing a request on, nothing else.

    python -m bench.bareproxy --serve PORT --upstream URL   (the bench's miss section runs it)

A raw ASGI app under uvicorn as `stability-gateway serve` runs it (httptools, uvloop, one
worker, no access log) that reads the caller's body, sends it with one shared httpx
AsyncClient (the gateway's 256 KiB socket reads) to the same path upstream, reads the whole
answer and returns its bytes. No validation, key, cache, limiter, lease, check or store:
its overhead against the fake is what any miss through a Python proxy built on the card's
packages pays here before doing any of the gateway's work.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import httpx

PASSED_ON = (b"authorization", b"accept", b"content-type")


def make_app(upstream: str) -> Any:
    from gateway.upstream import read_in_bigger_pieces

    read_in_bigger_pieces()
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(120, connect=10))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [(k, v) for k, v in scope["headers"] if k in PASSED_ON]
        answer = await client.request(scope["method"], scope["path"], content=body,
                                      headers=headers)  # fmt: skip
        kind = answer.headers.get("content-type", "application/octet-stream").encode()
        content = answer.content
        await send({"type": "http.response.start", "status": answer.status_code,
                    "headers": [(b"content-type", kind),
                                (b"content-length", str(len(content)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": content})

    return app


def serve(port: int, upstream: str) -> None:
    import uvicorn

    uvicorn.run(make_app(upstream), host="127.0.0.1", port=port, http="httptools",
                loop="uvloop", access_log=False, log_level="warning")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bareproxy", description=__doc__)
    p.add_argument("--serve", type=int, required=True, metavar="PORT")
    p.add_argument("--upstream", required=True)
    args = p.parse_args(argv)
    serve(args.serve, args.upstream)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
