"""Run the real gateway as a subprocess, the way users run it, for end-to-end tests.

A subprocess (not an in-process app) is the only way to test what the CLI, config loading,
signal handling and restarts really do, and to be sure no state leaks between test and gateway.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_COMMAND = (sys.executable, "-m", "gateway", "serve")


class GatewayStartError(RuntimeError):
    """The gateway exited or never became healthy; the message carries its log."""


def free_port() -> int:
    """A port nothing listens on right now (there is a small race until the gateway binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_env(
    cache_dir: str | os.PathLike[str],
    upstream_url: str | None = None,
    mode: str | None = None,
    api_key: str | None = None,
    **extra: object,
) -> dict[str, str]:
    """Environment for GatewayProcess from friendly names; None values are left out.

    Extra keys become STABILITY_GATEWAY_<KEY>, e.g. config="x.toml" -> STABILITY_GATEWAY_CONFIG.
    """
    named = {
        "STABILITY_GATEWAY_CACHE_DIR": cache_dir,
        "STABILITY_GATEWAY_UPSTREAM_URL": upstream_url,
        "STABILITY_GATEWAY_MODE": mode,
        "STABILITY_API_KEY": api_key,
    }
    named.update({f"STABILITY_GATEWAY_{key.upper()}": value for key, value in extra.items()})
    return {key: str(value) for key, value in named.items() if value is not None}


def start_on(folder: Path, upstream_url: str, **env: object) -> GatewayProcess:
    """A started gateway in front of `upstream_url` (a fake), retrying fast (50 ms backoff,
    no jitter), its cache and log under `folder`; `env` as for gateway_env."""
    settings = gateway_env(
        folder / "cache", upstream_url=upstream_url, backoff_initial=0.05, backoff_jitter=0, **env
    )
    return GatewayProcess(settings, log_dir=folder).start()


class GatewayProcess:
    """`python -m gateway serve --host 127.0.0.1 --port N` in a subprocess.

    The child sees os.environ minus every STABILITY_* variable (so a developer's real key or
    settings never leak into a test), plus `env`. Output goes to a log file rather than a pipe,
    so a chatty gateway can never block on a full pipe; logs() reads it back, across restarts.
    `command` replaces the program part (the default runs the gateway) and is always followed
    by --host/--port and `extra_args`. Without `log_dir` the log goes to a fresh temp dir that
    is left behind on purpose, for post-mortems; tests should pass their tmp_path.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        extra_args: Sequence[str] = (),
        cwd: str | os.PathLike[str] | None = None,
        command: Sequence[str] | None = None,
        port: int | None = None,
        log_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.cwd = Path(cwd) if cwd is not None else REPO_ROOT
        self.args = [
            *(command or GATEWAY_COMMAND),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *extra_args,
        ]
        self.env = _child_env(env or {})
        log_dir = log_dir if log_dir is not None else tempfile.mkdtemp(prefix="gateway-process-")
        self.log_path = Path(log_dir) / "gateway.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_start = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def logs(self) -> str:
        """Everything the process(es) wrote to stdout and stderr so far."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self, timeout: float = 20.0) -> Self:
        """Spawn the process and wait until GET /healthz answers 200."""
        if self._process is not None:
            raise RuntimeError("GatewayProcess already started")
        self._log_file = self.log_path.open("ab")
        self._log_start = len(self.logs())
        self._process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    self.stop()
                    raise GatewayStartError(self._failure(f"exited with code {code}"))
                if time.monotonic() > deadline:
                    self.stop()
                    raise GatewayStartError(self._failure(f"not healthy after {timeout:g} s"))
                try:
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)

    def wait_for_workers(self, workers: int, timeout: float = 20.0) -> Self:
        """/healthz answers as soon as one worker is up; wait until `workers` have started
        since this process was last started (the log file is shared across restarts)."""
        deadline = time.monotonic() + timeout
        while self.logs()[self._log_start :].count("Application startup complete.") < workers:
            if time.monotonic() > deadline:
                what = f"had not started {workers} workers after {timeout:g} s"
                raise GatewayStartError(self._failure(what))
            time.sleep(0.05)
        return self

    def stop(self) -> int | None:
        """SIGTERM, wait up to 10 s, then SIGKILL. Returns the exit code (None if not running)."""
        process, self._process = self._process, None
        code = None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            code = process.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def restart(self, timeout: float = 20.0) -> Self:
        """Stop, then start again on the same port (same url, same env, same log file)."""
        self.stop()
        return self.start(timeout)

    def _failure(self, what: str) -> str:
        return f"{' '.join(self.args)} {what}; log:\n{self.logs()}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _child_env(overrides: Mapping[str, str]) -> dict[str, str]:
    """os.environ without STABILITY_*, plus unbuffered output and the repo on the import path.

    Unbuffered output means logs() sees lines as they are written, even if the process is
    killed. The repo on PYTHONPATH lets `-m gateway` import from any cwd (tests run the gateway
    in a temp dir to check relative config paths) without the package being installed.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("STABILITY_")}
    python_path = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(python_path)})
    env.update(overrides)
    return env
