"""Run wrk with bench/lua/post.lua and read back the JSON its done() prints.

wrk is the load generator for every throughput and latency number: it is a separate C
process, so the client neither shares a GIL with the fake upstream nor costs Python time.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

LUA_SCRIPT = Path(__file__).resolve().parent / "lua" / "post.lua"
MARKER = "WRK_JSON "
EXTRA_SECONDS = 30  # how long past its duration wrk may run before it counts as hung


class WrkError(RuntimeError):
    """wrk failed or printed no result line."""


@dataclass(frozen=True)
class WrkJob:
    """One wrk invocation: where, how hard, how long, with which body and Accept."""

    url: str
    body_file: Path
    accept: str
    connections: int
    threads: int
    duration: float
    unique: bool = False  # replace __SEED__ per request (misses) instead of a fixed body
    first_seed: int = 1
    timeout: float = 10.0
    cycle: int = 0  # > 0: seeds first_seed .. first_seed + cycle - 1 in turn (a working set)

    def command(self, wrk: str) -> list[str]:
        return [
            wrk,
            f"-t{min(self.threads, self.connections)}",
            f"-c{self.connections}",
            f"-d{max(1, math.ceil(self.duration))}s",
            f"--timeout={math.ceil(self.timeout)}s",
            "-s",
            str(LUA_SCRIPT),
            self.url,
            "--",
            str(self.body_file),
            self.accept,
            "cycle" if self.cycle else "unique" if self.unique else "fixed",
            str(self.first_seed),
            str(self.cycle),
        ]


@dataclass
class WrkResult:
    """What one run measured. Latency percentiles in milliseconds."""

    requests: int
    duration_s: float
    bytes: int
    errors: dict[str, int]
    latency_ms: dict[str, float]
    command: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def failed(self) -> int:
        """Requests that did not end in a 2xx/3xx answer (non-2xx, timeouts, socket errors)."""
        return sum(self.errors.values())

    @property
    def bytes_per_request(self) -> float:
        """Bytes read per answer, headers included."""
        return self.bytes / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 2), "failed": self.failed}


def parse(output: str, command: list[str]) -> WrkResult:
    """The WRK_JSON line of wrk's output as a WrkResult."""
    for line in reversed(output.splitlines()):
        if line.startswith(MARKER):
            raw = json.loads(line[len(MARKER) :])
            latency = {name: value / 1000.0 for name, value in raw["latency_us"].items()}
            return WrkResult(
                requests=int(raw["requests"]),
                duration_s=raw["duration_us"] / 1e6,
                bytes=int(raw["bytes"]),
                errors={name: int(v) for name, v in raw["errors"].items()},
                latency_ms=latency,
                command=command,
            )
    raise WrkError(f"no {MARKER.strip()} line in wrk output:\n{output[-2000:]}")


def run(wrk: str, job: WrkJob) -> WrkResult:
    """Run one job to completion (bounded: wrk's own duration plus a grace period)."""
    command = job.command(wrk)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=job.duration + job.timeout + EXTRA_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(command)}") from exc
    if done.returncode != 0:
        raise WrkError(f"wrk exited {done.returncode}: {done.stderr[-2000:]}")
    return parse(done.stdout, command)
