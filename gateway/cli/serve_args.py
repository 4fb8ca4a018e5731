"""The `serve` command's arguments, apart from the server itself, so that building the
parser (for `cache` commands too) imports nothing of uvicorn or the app."""

from __future__ import annotations

import argparse
from typing import Any


def run(args: argparse.Namespace) -> int:
    from gateway.cli import serve

    return serve.serve(args)


def add_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    s.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default from config: 8080)")
    s.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: $STABILITY_GATEWAY_WORKERS, else [gateway] workers, 1)",
    )
    s.add_argument(
        "--cache-dir", help="cache folder (default: $STABILITY_GATEWAY_CACHE_DIR, else config)"
    )
    s.set_defaults(func=run)
