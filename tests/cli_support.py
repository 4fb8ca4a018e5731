"""Running the real `stability-gateway` command in tests: in a pipe, or on a terminal.

The command runs as a subprocess (`python -m gateway`), with the worktree on PYTHONPATH
and no STABILITY_* variable from the developer's environment. `in_terminal` gives it a
pseudo-terminal for stdin, stdout and stderr, as a person at a shell would.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STABILITY_")}
    for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TERM"):
        env.pop(name, None)
    env.update(PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """The command in a pipe: stdin, stdout and stderr are not terminals."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=env or cli_env(),
        input=input if input is not None else b"",
        capture_output=True,
        timeout=60,
    )


def in_terminal(
    *args: str, cwd: Path, env: dict[str, str] | None = None, typed: str = "", columns: int = 120
) -> tuple[int, str]:
    """The command on a pseudo-terminal `columns` wide; `typed` is what the user types.
    Returns (exit code, everything shown on the terminal without colour codes)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env={**(env or cli_env()), "TERM": "xterm-256color"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    if typed:
        os.write(master, typed.encode())
    shown = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the command has exited and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=60)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, _ANSI.sub("", shown.decode("utf-8", "replace")).replace("\r\n", "\n")
