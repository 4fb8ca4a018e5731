"""The one path every generation request takes: cache, policy, single-flight, upstream, store.

    parse (route) -> lookup -> decide (policy) -> serve | placeholder | 504 | fetch
    fetch: single-flight -> cross-process lease -> limiter + retries (UpstreamClient)
           -> decode (route) -> check images -> store -> render (route)
    upstream failure + allow_cached + an entry -> the entry, X-Cache: STALE

Blocking disk work runs in worker threads; the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import Response

from cache.store import Artifact, DiskStore, Entry
from gateway.config import Settings
from gateway.errors import GatewayError, GatewayTimeout, UpstreamError
from gateway.generation import Generation, RouteSpec
from gateway.images import check_image
from gateway.policy import Action, Controls, Decision, decide
from gateway.singleflight import DiskLease, SingleFlight
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

    async def handle(self, request: Request, spec: RouteSpec) -> Response:
        try:
            generation = await spec.parse(request)
        except GatewayError as exc:
            return exc.response(v2=spec.v2)
        controls = Controls.from_headers(
            request.headers, allow_cached_default=self.settings.cache.allow_cached_default
        )
        entry = None if controls.no_store else await anyio.to_thread.run_sync(
            self.store.get, generation.key
        )  # fmt: skip
        decision = decide(
            mode=self.settings.mode,
            controls=controls,
            meta=entry.meta if entry else None,
            now=time.time(),
            ttl=self.settings.cache.ttl_seconds,
            refresh_random=self.settings.cache.random_seed_policy == "refresh",
            random_seed=generation.random_seed,
        )
        log.info(
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
            return exc.response(v2=spec.v2, headers=headers)

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

        async def work() -> Fetched:
            return await self._fetch(generation, spec, caller, store=decision.store)

        try:
            if decision.store:
                fetched, _led = await self.flights.run(generation.key, work)
            else:
                fetched = await work()
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
            return passthrough(fetched.response, headers)
        assert fetched.artifacts is not None
        status = "BYPASS" if not decision.store else ("HIT" if fetched.shared else "MISS")
        return spec.render(fetched.artifacts, generation, {**headers, "X-Cache": status})

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
        self, generation: Generation, spec: RouteSpec, caller: dict[str, str], *, store: bool
    ) -> Fetched:
        if self.upstream is None:  # replay/offline never get here; defensive
            raise GatewayTimeout("this gateway has no upstream", name="not_cached")
        started = time.time()
        lease = DiskLease(self.store.state, generation.key, self.settings.timeouts.deadline_seconds)
        if store and not await anyio.to_thread.run_sync(lease.acquire):
            shared = await self._wait_for_other_process(generation, lease, started)
            if shared is not None:
                return shared
            store = store and await anyio.to_thread.run_sync(lease.acquire)
        try:
            try:
                async with asyncio.timeout(self.settings.timeouts.deadline_seconds):
                    response = await self.upstream.send(generation.upstream, caller)
            except TimeoutError:
                raise GatewayTimeout(
                    f"the upstream did not answer within the "
                    f"{self.settings.timeouts.deadline_seconds:g} s deadline",
                    name="upstream_timeout",
                ) from None
            if response.status_code != 200:
                self._log_refusal(response, generation)
                return Fetched(response=response)
            artifacts = await anyio.to_thread.run_sync(self._decode, spec, response, generation)
            if store and all(a.finish_reason == "SUCCESS" for a in artifacts):
                entry = Entry(
                    generation.key, artifacts, {**generation.summary, "source": "upstream"}
                )
                await anyio.to_thread.run_sync(self.store.put, entry)
            elif store:
                log.warning(
                    "not caching key=%s: finish reasons %s", generation.key[:16],
                    [a.finish_reason for a in artifacts],
                )  # fmt: skip
            return Fetched(artifacts=artifacts)
        finally:
            if store:
                await anyio.to_thread.run_sync(lease.release)

    def _decode(
        self, spec: RouteSpec, response: httpx.Response, generation: Generation
    ) -> list[Artifact]:
        try:
            artifacts = spec.decode(response, generation)
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

    async def _wait_for_other_process(
        self, generation: Generation, lease: DiskLease, started: float
    ) -> Fetched | None:
        """Another worker holds the lease: wait for it, then use what it stored."""
        while await anyio.to_thread.run_sync(lease.held_elsewhere):
            if time.time() - started > self.settings.timeouts.deadline_seconds:
                break
            await asyncio.sleep(LEASE_POLL_SECONDS)
        entry = await anyio.to_thread.run_sync(self.store.get, generation.key)
        if entry is not None and float(entry.meta["created_at"]) >= started:
            return Fetched(artifacts=entry.artifacts, shared=True)
        return None

    def _log_refusal(self, response: httpx.Response, generation: Generation) -> None:
        try:
            name = response.json().get("name", "")
        except ValueError:
            name = ""
        if name in CONTENT_POLICY_ERRORS:
            log.warning(
                "content policy refusal (%s, %d) for prompts %r",
                name, response.status_code, generation.summary.get("prompts"),
            )  # fmt: skip


def passthrough(response: httpx.Response, headers: dict[str, str]) -> Response:
    """The upstream's error answer, status and body as sent, plus our cache headers."""
    keep = {
        k: v
        for k, v in response.headers.items()
        if k.lower() in ("content-type", "retry-after", "x-request-id")
    }
    return Response(
        response.content,
        status_code=response.status_code,
        headers={**keep, **headers, "X-Cache": "MISS"},
    )
