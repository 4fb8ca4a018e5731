"""The one path every generation request takes: cache, policy, single-flight, upstream, store.

    parse (route) -> lookup -> decide (policy) -> serve | placeholder | 504 | fetch
    fetch: single-flight -> cross-process lease -> limiter + retries (UpstreamClient)
           -> decode (route) -> check images -> store -> render (route)
    upstream failure + allow_cached + an entry -> the entry, X-Cache: STALE

Blocking disk work runs in worker threads; the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import Response

from cache.store import Artifact, DiskStore, Entry
from gateway.config import Settings
from gateway.errors import GatewayError, GatewayTimeout, UpstreamError
from gateway.generation import Generation, RouteSpec
from gateway.images import check_decodes, check_image
from gateway.jobs import JobBook, job_id
from gateway.policy import Action, Controls, Decision, decide
from gateway.singleflight import DiskLease, Flight, SingleFlight
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway.pipeline")

CONTENT_POLICY_ERRORS = ("invalid_prompts", "content_moderation")
LEASE_POLL_SECONDS = 0.05


@dataclass
class Fetched:
    """What one upstream call produced: images, or an upstream error to pass through."""

    artifacts: list[Artifact] | None = None
    response: httpx.Response | None = None
    shared: bool = False  # produced by another worker process, read back from the cache

    @property
    def failed(self) -> bool:
        """An upstream failure the allow_cached fallback may cover (not a 4xx refusal)."""
        return self.response is not None and (
            self.response.status_code >= 500 or self.response.status_code == 429
        )


class Pipeline:
    def __init__(
        self, settings: Settings, store: DiskStore, upstream: UpstreamClient | None
    ) -> None:
        self.settings = settings
        self.store = store
        self.upstream = upstream
        self.flights = SingleFlight()
        self.jobs = JobBook(store.state)

    async def handle(self, request: Request, spec: RouteSpec) -> Response:
        try:
            generation = await spec.parse(request)
        except GatewayError as exc:
            return exc.response(v2=spec.v2)
        controls = Controls.from_headers(
            request.headers, allow_cached_default=self.settings.cache.allow_cached_default
        )
        entry = None if controls.no_store else await self._lookup(generation.key)
        decision = decide(
            mode=self.settings.mode,
            controls=controls,
            meta=entry.meta if entry else None,
            now=time.time(),
            ttl=self.settings.cache.ttl_seconds,
            refresh_random=self.settings.cache.random_seed_policy == "refresh",
            random_seed=generation.random_seed,
        )
        # Hits at DEBUG: they are the bulk of the traffic and uvicorn's access log has them.
        log.log(
            logging.DEBUG if decision.action is Action.SERVE else logging.INFO,
            "%s %s key=%s: %s", generation.route, generation.engine, generation.key[:16],
            decision.reason,
        )  # fmt: skip
        headers = {"X-Cache-Key": generation.key}
        try:
            if decision.action is Action.SERVE:
                assert entry is not None
                self.store.count_hit(generation.key, entry.nbytes)
                return spec.render(entry.artifacts, generation, {**headers, "X-Cache": "HIT"})
            self.store.count("misses")
            if decision.action is Action.MISS:
                raise GatewayTimeout(
                    f"not in the cache, and this request may not ask the upstream "
                    f"({decision.reason})",
                    name="not_cached",
                )
            if decision.action is Action.PLACEHOLDER:
                artifacts = await self._placeholder(generation, spec, decision)
                return spec.render(artifacts, generation, {**headers, "X-Cache": "OFFLINE"})
            return await self._fetch_and_render(
                request, generation, spec, decision, entry, controls.allow_cached, headers
            )
        except GatewayError as exc:
            # Errors say how the cache took part too: no entry was served or written.
            status = "BYPASS" if controls.no_store else "MISS"
            return exc.response(v2=spec.v2, headers={**headers, "X-Cache": status})

    async def _lookup(self, key: str) -> Entry | None:
        """Memory tier first (no thread hop for a hot entry), then the disk in a thread."""
        entry, on_disk = self.store.held(key)
        if entry is None and on_disk:
            entry = await anyio.to_thread.run_sync(self.store.get, key)
        return entry

    async def _placeholder(
        self, generation: Generation, spec: RouteSpec, decision: Decision
    ) -> list[Artifact]:
        artifacts = await anyio.to_thread.run_sync(spec.placeholder, generation)
        if decision.store:
            entry = Entry(generation.key, artifacts, {**generation.summary, "source": "offline"})
            await anyio.to_thread.run_sync(self.store.put, entry)
        return artifacts

    async def _fetch_and_render(
        self,
        request: Request,
        generation: Generation,
        spec: RouteSpec,
        decision: Decision,
        entry: Entry | None,
        allow_cached: bool,
        headers: dict[str, str],
    ) -> Response:
        caller = dict(request.headers)
        fallback = entry if decision.stale and allow_cached else None
        # One budget for everything from here: waiting for another worker's call, the
        # limiter queue, retries. Started now, so a wait cannot buy a second full deadline.
        deadline_at = time.monotonic() + self.settings.timeouts.deadline_seconds
        seen = entry.meta.get("created_at") if entry is not None else None

        async def work(flight: Flight) -> Fetched:
            return await self._fetch(
                generation, spec, caller, store=decision.store, seen=seen,
                deadline_at=deadline_at, on_send=flight.commit,
            )  # fmt: skip

        async def shared() -> Fetched:
            if not decision.store:  # nobody else may use this answer: nothing to share
                return await work(Flight())
            fetched, _led = await self.flights.run(self._flight_key(generation, caller), work)
            return fetched

        try:
            fetched = await unless_disconnected(request, shared())
        except ClientGone:
            log.info("caller went away while waiting for key=%s", generation.key[:16])
            return Response(status_code=499)
        except GatewayError as exc:
            if exc.status >= 500 or exc.status == 429:
                stale = self._stale(generation, spec, fallback, headers, str(exc))
                if stale is not None:
                    return stale
            raise

        if fetched.response is not None:
            if fetched.failed:
                why = f"upstream answered {fetched.response.status_code}"
                stale = self._stale(generation, spec, fallback, headers, why)
                if stale is not None:
                    return stale
            status = "BYPASS" if not decision.store else "MISS"
            return passthrough(fetched.response, {**headers, "X-Cache": status})
        assert fetched.artifacts is not None
        status = "BYPASS" if not decision.store else ("HIT" if fetched.shared else "MISS")
        return spec.render(fetched.artifacts, generation, {**headers, "X-Cache": status})

    def _flight_key(self, generation: Generation, caller: dict[str, str]) -> str:
        """Who may share one upstream call. With its own key the gateway calls upstream the
        same way for everyone; without one it forwards each caller's Authorization, so only
        callers with the same credential share a call (and its 401, if the credential is bad).
        The credential enters as a hash, and only this in-memory key, never the cache key."""
        if self.settings.api_key:
            return generation.key
        credential = caller.get("authorization", "").encode()
        return f"{generation.key}:{hashlib.sha256(credential).hexdigest()}"

    def _stale(
        self,
        generation: Generation,
        spec: RouteSpec,
        entry: Entry | None,
        headers: dict[str, str],
        why: str,
    ) -> Response | None:
        if entry is None:
            return None
        log.warning(
            "upstream failed (%s); serving the cached image for key=%s as a fallback (STALE)",
            why, generation.key[:16],
        )  # fmt: skip
        self.store.count("stale_served")
        return spec.render(
            entry.artifacts,
            generation,
            {**headers, "X-Cache": "STALE", "Warning": '111 - "Revalidation Failed"'},
        )

    async def _fetch(
        self,
        generation: Generation,
        spec: RouteSpec,
        caller: dict[str, str],
        *,
        store: bool,
        seen: object = None,
        deadline_at: float | None = None,
        on_send: Callable[[], None] = lambda: None,
    ) -> Fetched:
        """One upstream call for the key, unless a concurrent identical request (in this
        worker or another) has just stored its result: `seen` is the created_at of the entry
        this request found at lookup (None: none), so any other entry is newer than that."""
        if self.upstream is None:  # replay/offline never get here; defensive
            raise GatewayTimeout("this gateway has no upstream", name="not_cached")
        deadline = self.settings.timeouts.deadline_seconds
        deadline_at = time.monotonic() + deadline if deadline_at is None else deadline_at
        lease = DiskLease(self.store.state, generation.key, deadline)
        holds = False
        if store:
            holds, shared = await anyio.to_thread.run_sync(self._claim, lease, generation, seen)
            if not holds and shared is None:
                await self._wait_for_lease(lease, deadline_at)
                holds, shared = await anyio.to_thread.run_sync(self._claim, lease, generation, seen)
            if shared is not None:
                return Fetched(artifacts=shared.artifacts, shared=True)
        store = holds  # without the lease (another caller took it), fetch but do not store
        try:
            try:
                remaining = deadline_at - time.monotonic()
                if remaining <= 0:  # spent waiting for another worker's call
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    response = await self.upstream.send(
                        generation.upstream, caller, on_send=on_send
                    )
            except TimeoutError:
                raise GatewayTimeout(
                    f"the upstream did not answer within the "
                    f"{self.settings.timeouts.deadline_seconds:g} s deadline",
                    name="upstream_timeout",
                ) from None
            job = job_id(response)
            if job is not None:  # the image comes later, from GET /v2beta/results/{job}
                if store:
                    await anyio.to_thread.run_sync(self.jobs.remember, job, generation)
                log.info("upstream started job %s for key=%s", job, generation.key[:16])
                return Fetched(response=response)
            if response.status_code != 200:
                self._log_refusal(response, generation)
                return Fetched(response=response)
            owned, store = lease if store else None, False  # released by _decode_and_store
            artifacts = await anyio.to_thread.run_sync(
                self._decode_and_store, spec, response, generation, owned
            )
            return Fetched(artifacts=artifacts)
        finally:
            if store:
                await anyio.to_thread.run_sync(lease.release)

    def _claim(
        self, lease: DiskLease, generation: Generation, seen: object
    ) -> tuple[bool, Entry | None]:
        """Take the key's lease and look for a result stored since this request's lookup,
        in one thread hop: (holds the lease, entry stored meanwhile or None).

        Looked for after taking the lease, not only before: the holder may have stored and
        released between this request's lookup and its acquire. Compared by identity
        (created_at), not by time: an entry whose put began just before the lookup but
        committed just after it has an earlier created_at, yet is new to us.
        """
        holds = lease.acquire()
        meta = self.store.get_meta(generation.key)
        shared = None
        if meta is not None and meta.get("source") != "offline" and meta["created_at"] != seen:
            entry = self.store.get(generation.key)
            if entry is not None and entry.meta.get("created_at") != seen:
                shared = entry
        if shared is not None and holds:
            lease.release()
        return holds and shared is None, shared

    def _decode_and_store(
        self,
        spec: RouteSpec,
        response: httpx.Response,
        generation: Generation,
        lease: DiskLease | None,
    ) -> list[Artifact]:
        """Decode and check the images, store them (all SUCCESS only), release the lease:
        one thread hop for the blocking half of a miss. With `lease` None nothing is stored."""
        try:
            artifacts = self._decode(spec, response, generation)
            if lease is not None and all(a.finish_reason == "SUCCESS" for a in artifacts):
                meta = {**generation.summary, "source": "upstream"}
                check_decodes(*(a.data for a in artifacts))  # never store what cannot open
                self.store.put(Entry(generation.key, artifacts, meta))
            elif lease is not None:
                log.warning(
                    "not caching key=%s: finish reasons %s", generation.key[:16],
                    [a.finish_reason for a in artifacts],
                )  # fmt: skip
            return artifacts
        finally:
            if lease is not None:
                lease.release()

    def _decode(
        self, spec: RouteSpec, response: httpx.Response, generation: Generation
    ) -> list[Artifact]:
        try:
            artifacts = spec.decode(response, generation)
            if len(artifacts) != generation.samples:
                raise UpstreamError(
                    f"upstream sent {len(artifacts)} images, {generation.samples} were asked for"
                )
            for artifact in artifacts:
                check_image(
                    artifact.data,
                    expected_size=generation.expected_size,
                    formats=generation.expected_formats,
                )
        except UpstreamError as exc:
            log.error("unusable upstream answer for key=%s: %s", generation.key[:16], exc)
            raise
        return artifacts

    async def _wait_for_lease(self, lease: DiskLease, deadline_at: float) -> None:
        """Another worker holds the key's lease: wait until it lets go, or the deadline."""
        while await anyio.to_thread.run_sync(lease.held_elsewhere):
            if time.monotonic() >= deadline_at:
                return
            await asyncio.sleep(LEASE_POLL_SECONDS)

    def _log_refusal(self, response: httpx.Response, generation: Generation) -> None:
        try:
            body = response.json()
        except ValueError:
            body = None
        name = body.get("name", "") if isinstance(body, dict) else ""
        if name in CONTENT_POLICY_ERRORS:
            log.warning(
                "content policy refusal (%s, %d) for prompts %r",
                name, response.status_code, generation.summary.get("prompts"),
            )  # fmt: skip


T = TypeVar("T")


class ClientGone(Exception):
    """The caller closed its connection before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, unless the caller disconnects first: then cancel it and raise ClientGone.

    Starlette does not cancel a handler whose client has gone, so without this a request
    abandoned in the rate-limit queue would still spend a credit when its turn came. The
    request body has been read by now, so the next ASGI message can only be the disconnect.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def passthrough(response: httpx.Response, headers: dict[str, str]) -> Response:
    """The upstream's error answer, status and body as sent, plus our cache headers
    (`headers` carries X-Cache and X-Cache-Key)."""
    keep = {
        k: v
        for k, v in response.headers.items()
        if k.lower() in ("content-type", "retry-after", "x-request-id")
    }
    return Response(
        response.content,
        status_code=response.status_code,
        headers={**keep, **headers},
    )
