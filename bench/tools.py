"""External tools the benchmark needs (Debian's nginx, wrk and redis-server), installed on
demand.

The bench installs what it needs rather than asking the reader to: the issue wants one entry
point that works on a fresh Debian machine. Installing Debian's nginx package would normally
start the system nginx on port 80 (all interfaces); the install runs under a policy-rc.d that
forbids starting services, so nothing but the bench's own loopback-only nginx ever runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

# Debian package -> the program it provides.
PACKAGES = {"nginx": "nginx", "wrk": "wrk", "redis-server": "redis-server"}
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
APT_TIMEOUT_SECONDS = 600


class ToolError(RuntimeError):
    """A tool is missing and could not be installed; the message says what to do."""


def find(program: str) -> str | None:
    """The program's path, also looking in the sbin folders a non-root PATH may lack."""
    found = shutil.which(program)
    if found:
        return found
    for folder in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(folder) / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@contextlib.contextmanager
def services_kept_down() -> Iterator[None]:
    """Forbid package scripts from starting services (Debian's policy-rc.d convention).

    Leaves an existing policy-rc.d alone; removes only the one it wrote.
    """
    if POLICY_RC_D.exists():
        yield
        return
    POLICY_RC_D.write_text("#!/bin/sh\n# written by stability-gateway bench\nexit 101\n")
    POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        POLICY_RC_D.unlink(missing_ok=True)


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    prefix: list[str] = [] if os.geteuid() == 0 else ["sudo", "-n"]
    return subprocess.run(
        [*prefix, "apt-get", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT_SECONDS,
        check=False,
    )


def ensure_tools(log: list[str]) -> dict[str, str]:
    """Path of every program in PACKAGES, installing missing ones with apt-get.

    `apt-get update` runs only when a first install attempt fails (a stale or empty list).
    """
    missing = [package for package, program in PACKAGES.items() if find(program) is None]
    if missing:
        if shutil.which("apt-get") is None:
            raise ToolError(f"missing {', '.join(missing)} and no apt-get: install them by hand")
        if os.geteuid() != 0 and shutil.which("sudo") is None:
            raise ToolError(f"missing {', '.join(missing)}: run as root or install them by hand")
        log.append(f"installing {' '.join(missing)} with apt-get")
        install = ("install", "-y", "-q", "--no-install-recommends", *missing)
        with services_kept_down():
            result = _apt(*install)
            if result.returncode != 0:
                _apt("update", "-q")
                result = _apt(*install)
        if result.returncode != 0:
            raise ToolError(f"apt-get install {' '.join(missing)} failed:\n{result.stderr[-2000:]}")
    paths = {program: find(program) for program in PACKAGES.values()}
    absent = [program for program, path in paths.items() if path is None]
    if absent:
        raise ToolError(f"still missing after install: {', '.join(absent)}")
    return {program: str(path) for program, path in paths.items()}


def version_of(command: list[str]) -> str:
    """First line of a tool's version output (nginx prints it on stderr, wrk exits 1)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unknown ({exc})"
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"
