"""`stability-gateway serve` and `stability-gateway cache ...`.

The cache commands work on the cache folder directly (no server needed), so they also
work on a gateway that is stopped, or on a folder copied from another machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn

from gateway.config import ConfigError, load_settings


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class NoDelayConfig(uvicorn.Config):
    """uvicorn's Config, with TCP_NODELAY on the socket it binds for `--workers N`.

    With one worker uvicorn lets asyncio create the socket, and asyncio turns Nagle's
    algorithm off on every connection. With several, uvicorn binds a socket itself without
    naming the protocol, so asyncio leaves Nagle on, and an answer written in pieces
    (headers, then body slices) can wait ~40 ms for a delayed ACK. Set on the listening
    socket, the option is inherited by every connection it accepts (Linux).
    """

    def bind_socket(self) -> socket.socket:
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def serve(args: argparse.Namespace) -> int:

    if args.config:
        os.environ["STABILITY_GATEWAY_CONFIG"] = os.path.abspath(args.config)
    settings = load_settings()  # fail fast, in the parent, on a bad file
    if args.workers > 1 and settings.rate_limit.backend == "memory":
        raise ConfigError(
            "rate_limit.backend 'memory' is per process: with --workers "
            f"{args.workers} the upstream would see {args.workers}x the limit; use 'disk'"
        )
    config = NoDelayConfig(
        "gateway.app:app_from_environment",
        factory=True,
        host=args.host or settings.gateway.host,
        port=args.port or settings.gateway.port,
        workers=args.workers,
        log_level=settings.gateway.log_level,
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    if config.workers > 1:  # what uvicorn.run does for workers, with our Config
        from uvicorn.supervisors import Multiprocess

        # uvicorn < 0.36 also wants the server's run method as `target`.
        wants_target = "target" in inspect.signature(Multiprocess).parameters
        extra = {"target": server.run} if wants_target else {}
        Multiprocess(config, sockets=[config.bind_socket()], **extra).run()
    else:
        server.run()
        if not server.started:
            return 3  # uvicorn logged why (port in use, app failed to start)
    return 0


def cache_command(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cache.store import DiskStore
    from gateway.inspect_api import public_meta

    settings = load_settings(args.config)
    store = DiskStore(settings.cache.dir, size_limit=settings.cache.size_limit_bytes)
    console = Console()
    try:
        if args.action == "stats":
            print(json.dumps({"dir": settings.cache.dir, **store.stats()}, indent=2))
        elif args.action == "ls":
            total, page = store.list_meta(args.limit, args.offset)
            table = Table(title=f"{total} entries in {settings.cache.dir}")
            for column in ("key", "engine", "size", "bytes", "hits", "created", "prompt"):
                table.add_column(column)
            for meta in page:
                prompts = meta.get("prompts") or [{"text": meta.get("prompt", "")}]
                table.add_row(
                    meta["key"][:16],
                    str(meta.get("engine", "")),
                    f"{meta.get('width')}x{meta.get('height')}",
                    str(meta.get("bytes", 0)),
                    str(meta.get("hits", 0)),
                    _when(meta.get("created_at")),
                    str(prompts[0].get("text", ""))[:60],
                )
            console.print(table)
        elif args.action == "show":
            meta = store.get_meta(_resolve(store, args.key))
            print(json.dumps(public_meta(meta), indent=2, ensure_ascii=False))  # type: ignore[arg-type]
        elif args.action == "rm":
            store.delete(_resolve(store, args.key))
            print(f"deleted {args.key}")
        elif args.action == "purge":
            print(f"purged {store.purge()} entries")
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0


def _resolve(store: object, prefix: str) -> str:
    """A full key, or a unique prefix of one (as `ls` prints them)."""
    from cache.store import DiskStore

    assert isinstance(store, DiskStore)
    if store.get_meta(prefix) is not None:
        return prefix
    matches = [m["key"] for m in store.iter_meta() if m["key"].startswith(prefix)]
    if len(matches) != 1:
        raise KeyError(f"{len(matches)} entries match {prefix!r}")
    return matches[0]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stability-gateway", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", help="TOML config file (default: ./config.toml if present)")
    s.add_argument("--host", help="address to bind (default from config: 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default from config: 8080)")
    s.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    s.set_defaults(func=serve)
    c = sub.add_parser("cache", help="inspect or clear the cache folder")
    c.add_argument("--config", help="TOML config file")
    actions = c.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("ls", help="list entries, newest first")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--offset", type=int, default=0)
    actions.add_parser("stats", help="entries, bytes, hits, misses, upstream calls")
    for name in ("show", "rm"):
        a = actions.add_parser(name, help=f"{name} one entry (key or unique key prefix)")
        a.add_argument("key")
    actions.add_parser("purge", help="delete every entry")
    c.set_defaults(func=cache_command)
    from gateway.client.command import add_generate_parser

    add_generate_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
