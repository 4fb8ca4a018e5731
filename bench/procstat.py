"""Memory and CPU of a process and its descendants, read from /proc (Linux only).

Used to give the gateway's peak RSS (all workers of `--workers N` included) and the CPU time
each contender spends per request. CPU time per request is worth reporting beside req/s on a
shared machine: other load slows a server down but barely changes what a request costs it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def descendants(root: int) -> list[int]:
    """`root` and every process below it (uvicorn's workers, nginx's workers)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB; (0, 0) for a process that is gone."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0])
    except OSError:
        pass
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(root: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `root` and its live descendants so far. System time is
    where the kernel copies answers into sockets and zeroes freshly mapped memory."""
    user = system = 0
    for pid in descendants(root):
        fields = _stat_fields(pid)
        if fields is not None:
            user += int(fields[11])
            system += int(fields[12])
    return user / CLOCK_TICKS, system / CLOCK_TICKS


@dataclass
class MemorySample:
    """The largest figures seen while sampling, in MiB."""

    peak_rss_total: float = 0.0  # most RSS of all processes together at one sample
    peak_hwm: dict[int, float] = field(default_factory=dict)  # kernel's own peak, per process
    last_rss_total: float = 0.0
    samples: int = 0

    @property
    def peak_hwm_total(self) -> float:
        """Sum of each process's own peak: an upper bound on the peak of the whole."""
        return sum(self.peak_hwm.values())


class MemorySampler:
    """Polls RSS of a process tree on a thread every `interval` seconds until stopped.

    VmHWM (the kernel's high-water mark) catches peaks between two samples; the summed
    VmRSS series shows when they happened.
    """

    def __init__(self, root: int, interval: float = 0.05) -> None:
        self.root = root
        self.interval = interval
        self.result = MemorySample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        total = 0
        for pid in descendants(self.root):
            rss, hwm = memory_kib(pid)
            total += rss
            self.result.peak_hwm[pid] = max(self.result.peak_hwm.get(pid, 0.0), hwm / 1024)
        self.result.last_rss_total = total / 1024
        self.result.peak_rss_total = max(self.result.peak_rss_total, total / 1024)
        self.result.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Self:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


def rss_now_mib(root: int) -> float:
    """Summed VmRSS of the tree right now, in MiB."""
    return sum(memory_kib(pid)[0] for pid in descendants(root)) / 1024


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it returns true or `timeout` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
