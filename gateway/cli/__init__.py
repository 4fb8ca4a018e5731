"""`stability-gateway serve` and `stability-gateway cache ...`.

The cache commands work on the cache folder directly (no server needed), so they also
work on a gateway that is stopped, or on a folder copied from another machine.

    serve_args.py      the serve command's arguments (no uvicorn import)
    serve.py           the server: uvicorn with the gateway's config
    server_limits.py   what one connection may cost it (headers, slow clients, connections)
    cache_commands.py  cache ls | stats | show | rm | purge
    store_access.py    the few store calls the cache commands make
    token.py           token new NAME: a caller token, and its [callers.NAME] table
    (generate: gateway.client.command, the video team's script runner)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from gateway.backends import BackendError
from gateway.cli import cache_commands, serve_args, token
from gateway.client.command import add_generate_parser
from gateway.config import ConfigError

DISTRIBUTION = "stability-gateway"


def version() -> str:
    """The installed package's version (pyproject.toml's, once installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stability-gateway",
        description="A caching gateway in front of Stability AI's REST API.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    serve_args.add_parser(sub)
    cache_commands.add_parser(sub)
    add_generate_parser(sub)
    token.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
