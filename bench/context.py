"""What every section gets: the options, the tools, a work folder, and helpers to measure."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat, wrk
from bench.upstream import TEXT_TO_IMAGE


@dataclass(frozen=True)
class Options:
    """Every knob of a run; the defaults are the issue's (see bench/README.md)."""

    duration: float = 10.0  # each measured throughput run
    warmup: float = 3.0  # each warm-up run before it, excluded from the numbers
    connections: int = 64
    threads: int = 2  # wrk threads (the machine has 2 cores)
    workers: int = 1  # gateway workers and nginx worker_processes in the hit sections
    miss_connections: int = 1
    miss_duration: float = 10.0
    miss_realistic: bool = True  # also measure misses of the ~2.6 MB image
    limiter_limit: int = 30
    limiter_period: float = 2.0
    limiter_duration: float = 20.0
    limiter_workers: tuple[int, ...] = (1, 2)
    upstream_latency: float = 0.5  # limiter, single-flight and credits sections
    singleflight_requests: int = 100
    memory_requests: int = 10_000
    entries_count: int = 100_000  # the "entries" section's index size
    quick: bool = False


@dataclass
class Context:
    options: Options
    tools: dict[str, str]
    work: Path
    fixed_body: Path
    unique_body: Path
    started: float = field(default_factory=time.monotonic)
    _next_seed: int = 1

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[bench {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def first_seed(self) -> int:
        """A seed range no earlier wrk run of this bench used (unique-request runs)."""
        seed, self._next_seed = self._next_seed, self._next_seed + 100_000_000
        return seed

    def wrk(
        self,
        base_url: str,
        accept: str,
        *,
        duration: float,
        connections: int | None = None,
        unique: bool = False,
    ) -> wrk.WrkResult:
        connections = connections or self.options.connections
        job = wrk.WrkJob(
            url=f"{base_url}{TEXT_TO_IMAGE}",
            body_file=self.unique_body if unique else self.fixed_body,
            accept=accept,
            connections=connections,
            threads=self.options.threads,
            duration=duration,
            unique=unique,
            first_seed=self.first_seed() if unique else 1,
        )
        return wrk.run(self.tools["wrk"], job)

    def measured_wrk(
        self,
        base_url: str,
        accept: str,
        server_pid: int,
        *,
        duration: float,
        connections: int | None = None,
        unique: bool = False,
    ) -> tuple[wrk.WrkResult, tuple[float, float]]:
        """A warm-up run (discarded), then the measured run and the server's (user, system)
        CPU seconds spent during it (all its processes)."""
        if self.options.warmup > 0:
            self.wrk(
                base_url,
                accept,
                duration=self.options.warmup,
                connections=connections,
                unique=unique,
            )
        user, system = procstat.cpu_seconds(server_pid)
        result = self.wrk(
            base_url, accept, duration=duration, connections=connections, unique=unique
        )
        user_after, system_after = procstat.cpu_seconds(server_pid)
        return result, (user_after - user, system_after - system)
