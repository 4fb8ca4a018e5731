"""A small asyncio client for the sections where wrk does not fit: bounded concurrent POSTs
whose answers are inspected (status, X-Cache, body hash). Rates here are low (tens per
second), so a Python client in the bench process is not what limits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.upstream import TEXT_TO_IMAGE, generation_body


@dataclass
class Answer:
    status: int
    cache: str
    digest: str  # SHA-256 of the image: identical images have identical digests
    seconds: float


@dataclass
class Tally:
    """What a batch of requests got back."""

    answers: list[Answer] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # transport errors by type
    cancelled: int = 0  # requests still outstanding when a time-bounded batch ended

    def statuses(self) -> dict[int, int]:
        return dict(Counter(a.status for a in self.answers))

    def caches(self) -> dict[str, int]:
        return dict(Counter(a.cache for a in self.answers))

    def digests(self) -> set[str]:
        return {a.digest for a in self.answers if a.status == 200}

    def to_json(self) -> dict[str, Any]:
        return {
            "answers": len(self.answers),
            "statuses": self.statuses(),
            "x_cache": self.caches(),
            "distinct_images": len(self.digests()),
            "transport_errors": dict(self.errors),
            "cancelled_at_end": self.cancelled,
        }


def _image_digest(response: httpx.Response) -> str:
    """Hash of the first artifact's base64 (JSON answers) or of the bytes (image answers)."""
    if response.status_code != 200:
        return ""
    if response.headers.get("content-type", "").startswith("application/json"):
        payload = response.json()
        return hashlib.sha256(payload["artifacts"][0]["base64"].encode()).hexdigest()
    return hashlib.sha256(response.content).hexdigest()


async def post(client: httpx.AsyncClient, body: dict[str, Any], tally: Tally) -> None:
    """One generation request; its answer (or transport error) goes into `tally`."""
    started = time.monotonic()
    try:
        response = await client.post(
            TEXT_TO_IMAGE,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
    except httpx.HTTPError as exc:
        tally.errors[type(exc).__name__] += 1
        return
    tally.answers.append(
        Answer(
            response.status_code,
            response.headers.get("x-cache", "-"),
            _image_digest(response),
            time.monotonic() - started,
        )
    )


def client(base_url: str, connections: int, timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=timeout,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


@contextlib.asynccontextmanager
async def clients(
    base_urls: str | Sequence[str], connections: int, timeout: float
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client per base URL (several replicas: requests are spread over them in turn)."""
    urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(url, connections, timeout)) for url in urls]


async def post_all(
    base_url: str | Sequence[str],
    bodies: list[dict[str, Any]],
    concurrency: int,
    timeout: float = 120.0,
) -> Tally:
    """POST every body, at most `concurrency` at a time; body i to base URL i mod n."""
    tally = Tally()
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
        async with gate:
            await post(http, body, tally)

    async with clients(base_url, concurrency, timeout) as https:
        await asyncio.gather(*(one(https[i % len(https)], body) for i, body in enumerate(bodies)))
    return tally


async def backlog(
    base_url: str | Sequence[str],
    concurrency: int,
    seconds: float,
    first_seed: int,
    timeout: float,
) -> Tally:
    """Keep `concurrency` distinct requests outstanding for `seconds`, then cancel the rest.

    Each worker loops: POST a request with a seed never used before, wait for its answer,
    repeat, until the time is up. With several base URLs (replicas), worker i uses URL i
    mod n. Bounded in time (seconds) and, through the timeout, in
    how long a single request may hang.
    """
    tally = Tally()
    deadline = time.monotonic() + seconds
    seeds = iter(range(first_seed, first_seed + 10_000_000))

    async def worker(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            body = generation_body("A lighthouse in a storm", next(seeds))
            await post(http, body, tally)

    async with clients(base_url, concurrency, timeout) as https:
        tasks = [asyncio.create_task(worker(https[i % len(https)])) for i in range(concurrency)]
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        tally.cancelled = len(pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return tally
