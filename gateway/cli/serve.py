"""`stability-gateway serve`: run the gateway under uvicorn, with the server's limits."""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import shutil
import socket
import tempfile
from typing import Any

import uvicorn

from gateway.cli.server_limits import BodyTimeout, LimitedHttpToolsProtocol, ServerLimits
from gateway.config import ConfigError, Settings, load_settings

log = logging.getLogger("uvicorn.error")

# Open files a worker needs besides its connections: SQLite, blobs, upstream sockets.
SPARE_FILES = 256


class GatewayConfig(uvicorn.Config):
    """uvicorn's Config with the gateway's server limits, and TCP_NODELAY for `--workers N`.

    The limits travel on the config (`server_limits`), which uvicorn hands to every
    connection's protocol and pickles into every worker process.
    """

    def __init__(self, app: str, *, server_limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(app, http=LimitedHttpToolsProtocol, ws="none", **kwargs)
        self.server_limits = server_limits

    def load(self) -> None:
        super().load()
        self.loaded_app = BodyTimeout(self.loaded_app, self.server_limits.body_timeout)

    def bind_socket(self) -> socket.socket:
        """With one worker uvicorn lets asyncio create the socket, and asyncio turns Nagle's
        algorithm off on every connection. With several, uvicorn binds a socket itself
        without naming the protocol, so asyncio leaves Nagle on, and an answer written in
        pieces (headers, then body slices) can wait ~40 ms for a delayed ACK. Set on the
        listening socket, the option is inherited by every connection it accepts (Linux).
        """
        sock = super().bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def serve(args: argparse.Namespace) -> int:
    # The workers build their app from the environment: pass the choices on through it.
    if args.config:
        os.environ["STABILITY_GATEWAY_CONFIG"] = os.path.abspath(args.config)
    if args.cache_dir:
        os.environ["STABILITY_GATEWAY_CACHE_DIR"] = os.path.abspath(args.cache_dir)
    settings = load_settings()  # fail fast, in the parent, on a bad file
    workers = args.workers if args.workers is not None else settings.gateway.workers
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if workers > 1 and settings.rate_limit.backend == "memory":
        raise ConfigError(
            "rate_limit.backend 'memory' is per process: with --workers "
            f"{workers} the upstream would see {workers}x the limit; use 'disk'"
        )
    check_backends(settings)  # a read-only or corrupt cache folder: one line, not a traceback
    host = args.host or settings.gateway.host
    # The workers read their settings from the environment: tell them where they listen
    # (the inspection API closes itself beyond loopback without an admin token) and how
    # many they are (each paces itself at its share of the limit on a full disk).
    os.environ["STABILITY_GATEWAY_HOST"] = host
    os.environ["STABILITY_GATEWAY_WORKERS"] = str(workers)
    metrics_dir = _metrics_folder()
    limits = ServerLimits.from_settings(settings.gateway)
    config = GatewayConfig(
        "gateway.app:app_from_environment",
        factory=True,
        host=host,
        port=args.port or settings.gateway.port,
        workers=workers,
        log_level=settings.gateway.log_level,
        proxy_headers=False,
        server_header=False,
        access_log=False,  # the gateway writes its own access line (gateway.http.access)
        server_limits=limits,
    )
    _raise_open_file_limit(limits.max_connections + SPARE_FILES)
    _say_mode(settings)
    server = uvicorn.Server(config)
    try:
        return _run(server, config)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_folder() -> str | None:
    """Where every worker writes its metrics, for /metrics to add up (prometheus_client's
    multiprocess mode). Fresh for each start, unless the operator chose one; must be set
    before any worker imports prometheus_client."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    folder = tempfile.mkdtemp(prefix="stability-gateway-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    return folder


def _run(server: uvicorn.Server, config: GatewayConfig) -> int:
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


def check_backends(settings: Settings) -> None:
    """Open and close the backends once in the parent: BackendError if they cannot be."""
    import asyncio

    from gateway.backends import open_backends

    asyncio.run(open_backends(settings).aclose())


def _say_mode(settings: Settings) -> None:
    """Offline mode answers every miss with a placeholder: say so loudly at start, so that
    an image deployed without its key is noticed in the first line of its log."""
    if settings.mode != "offline":
        return
    why = "STABILITY_GATEWAY_MODE=offline" if settings.gateway.mode else "no STABILITY_API_KEY"
    log.warning(
        "OFFLINE mode (%s): nothing is sent to Stability; every cache miss is answered "
        "with a placeholder image. Set STABILITY_API_KEY for real images.",
        why,
    )


def _raise_open_file_limit(needed: int) -> None:
    """Let each worker hold max_connections sockets: raise the soft open-file limit (often
    1,024) towards the hard one, inherited by the workers. Past it, accept() fails and even
    /healthz does; say so when the hard limit is too low."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "the open-file limit (%d) is below [gateway] max_connections + %d (%d): "
            "lower max_connections or raise `ulimit -n`",
            soft,
            SPARE_FILES,
            needed,
        )
