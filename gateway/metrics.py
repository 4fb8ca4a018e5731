"""Prometheus metrics (prometheus_client), summed over every worker process.

`stability-gateway serve` points PROMETHEUS_MULTIPROC_DIR at a fresh folder before any
worker starts; each worker then writes its samples there and `GET /metrics` adds them all
up (prometheus_client's multiprocess mode). Built in process without that variable (the
tests' in-process app), the metrics live in the app's own registry.

Labels are bounded: `route` is a route template (never a raw path: engine ids and job ids
stay out), `cache` one of the X-Cache values, `status` a status code, `caller` a configured
caller name (or "anonymous"). Gauges that describe shared state (cache size, the budget)
are read when scraped.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

PREFIX = "stability_gateway"
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
UPSTREAM_SECONDS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
WAIT_SECONDS = (0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 90)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Requests answered.",
                                ["route", "status", "cache", "caller"], registry=r)  # fmt: skip
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds", "Time to answer a request.",
            ["route", "cache"], buckets=SECONDS, registry=r,
        )  # fmt: skip
        self.upstream = Counter(f"{PREFIX}_upstream_requests", "Attempts sent upstream.",
                                ["route", "status"], registry=r)  # fmt: skip
        self.upstream_duration = Histogram(
            f"{PREFIX}_upstream_duration_seconds", "Time of one upstream attempt.", ["route"],
            buckets=UPSTREAM_SECONDS, registry=r,
        )  # fmt: skip
        self.retries = Counter(f"{PREFIX}_upstream_retries", "Upstream attempts retried.",
                               ["reason"], registry=r)  # fmt: skip
        self.queue_depth = Gauge(f"{PREFIX}_ratelimit_queue_depth",
                                 "Requests waiting for an upstream send slot.",
                                 registry=r, multiprocess_mode="livesum")  # fmt: skip
        self.wait = Histogram(f"{PREFIX}_ratelimit_wait_seconds",
                              "Time waited for an upstream send slot.",
                              buckets=WAIT_SECONDS, registry=r)  # fmt: skip
        self.late_sends = Counter(f"{PREFIX}_ratelimit_late_sends",
                                  "Sends written upstream so long after their slot was "
                                  "granted that the limiter counts them from when they left.",
                                  registry=r)  # fmt: skip
        self.coalesced = Counter(f"{PREFIX}_coalesced_requests",
                                 "Requests answered by an identical request's call.",
                                 registry=r)  # fmt: skip
        self.from_file = Counter(f"{PREFIX}_hits_sent_from_file",
                                 "Image hits the server sent from the blob's file "
                                 "(zero-copy), not read into memory.", registry=r)  # fmt: skip
        self.stale = Counter(f"{PREFIX}_stale_served",
                             "Cached fallbacks served when the upstream failed.",
                             registry=r)  # fmt: skip
        self.spent = Counter(f"{PREFIX}_credits_spent", "Credits charged by upstream calls.",
                             ["route", "caller"], registry=r)  # fmt: skip
        self.saved = Counter(f"{PREFIX}_credits_saved", "Credits saved by cache hits.",
                             ["route", "caller"], registry=r)  # fmt: skip
        self.budget = Gauge(f"{PREFIX}_budget_remaining_credits",
                            "Credits left in today's budget (UTC); absent without one.",
                            registry=r, multiprocess_mode="mostrecent")  # fmt: skip
        # The labelled children of the two per-request metrics (bounded, as their labels).
        self._request_children: dict[tuple[str, str, str, str], tuple[Counter, Histogram]] = {}
        self.entries = Gauge(f"{PREFIX}_cache_entries", "Entries in the cache.",
                             registry=r, multiprocess_mode="mostrecent")  # fmt: skip
        self.bytes = Gauge(f"{PREFIX}_cache_bytes", "Image bytes in the cache.",
                           registry=r, multiprocess_mode="mostrecent")  # fmt: skip

    # -- what the rest of the gateway reports -----------------------------------------------

    def request(self, route: str, status: int, cache: str, caller: str, seconds: float) -> None:
        labels = (route or "unmatched", str(status), cache or "none", caller or "anonymous")
        children = self._request_children.get(labels)
        if children is None:  # labels() validates and locks: ~4 us a call, on every request
            children = (self.requests.labels(*labels),
                        self.request_duration.labels(labels[0], labels[2]))  # fmt: skip
            self._request_children[labels] = children
        children[0].inc()
        children[1].observe(seconds)

    def attempt(self, route: str, status: str, seconds: float) -> None:
        self.upstream.labels(route, status).inc()
        self.upstream_duration.labels(route).observe(seconds)

    def retry(self, reason: str) -> None:
        self.retries.labels(reason).inc()

    def queued(self, delta: int) -> None:
        self.queue_depth.inc(delta)

    def waited(self, seconds: float) -> None:
        self.wait.observe(seconds)

    def sent_late(self) -> None:
        self.late_sends.inc()

    # -- scraping -----------------------------------------------------------------------------

    async def render(self, refresh: Callable[[], Awaitable[None]]) -> tuple[bytes, str]:
        """The text exposition: `refresh` first sets the gauges read from shared state."""
        await refresh()
        folder = multiprocess_dir()
        if folder is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=folder)  # type: ignore[no-untyped-call]
        return generate_latest(combined), CONTENT_TYPE_LATEST

    def process_gone(self) -> None:
        """This worker stops: its live gauges no longer count."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
