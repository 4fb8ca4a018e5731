"""The one path every generation request takes, top to bottom:

    parse (route) -> lookup -> decide (policy) -> serve | placeholder | 504 | fetch
                                                   -> respond (one place: answer + X-Cache)

Routes only parse, decode and render (gateway.generation.RouteSpec); the cache decision
is a pure function (gateway.policy); everything that talks to the upstream is the fetch
path's (gateway.fetch). `respond` turns every outcome into the caller's answer, and is the
only code that decides an X-Cache value.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import Response

from cache.interfaces import CoordinationError, StoreError
from cache.keys import scoped_key
from cache.memory import TieredEntryStore
from cache.model import Artifact, Entry, EntryMeta, ImageFile
from gateway.callers import ANONYMOUS as ANONYMOUS_CALLER
from gateway.callers import Caller, caller_of, ticket_of
from gateway.config import Settings
from gateway.counters import Counters
from gateway.credits import price_of
from gateway.deadline import Deadline
from gateway.errors import GatewayError, GatewayTimeout
from gateway.fetch import STORE_WAIT_SECONDS, Failed, Fetched, Fetcher, Outcome, Refused, Shared
from gateway.generation import Generation, RouteSpec
from gateway.http import access, zerocopy
from gateway.http.disconnect import ClientGone, unless_disconnected
from gateway.http.forward import forward
from gateway.http.image_answer import ImageFileAnswer
from gateway.metrics import Metrics
from gateway.parse_memo import ParseMemo
from gateway.policy import Action, Controls, Decision, decide
from gateway.stats import variant_key

log = logging.getLogger("gateway.pipeline")

STALE_WARNING = '111 - "Revalidation Failed"'
MAX_VARIANT_TURNS = 10_000


def scoped(generation: Generation, caller: Caller, controls: Controls) -> Generation:
    """The request in its cache scope: a private caller's own entries, a namespace, and the
    entry's lifetime asked for with X-Cache-TTL."""
    scope = []
    summary = dict(generation.summary)
    if caller.private:
        scope.append(f"caller={caller.name}")
        summary["caller"] = caller.name
    if controls.namespace:
        scope.append(f"namespace={controls.namespace}")
        summary["namespace"] = controls.namespace
    if not scope and controls.ttl is None:
        return generation
    return dataclasses.replace(
        generation, key=scoped_key(generation.key, scope), summary=summary, ttl=controls.ttl
    )


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        entries: TieredEntryStore,
        counters: Counters,
        fetcher: Fetcher | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.entries = entries
        self.counters = counters
        self.metrics = metrics
        self.fetcher = fetcher  # None in offline and replay modes: no upstream
        self._turns: dict[str, int] = {}  # variants: whose turn it is next, per key
        self.memo = ParseMemo()  # a repeated request (a hit, mostly) is not parsed again

    async def handle(self, request: Request, route: RouteSpec) -> Response:
        caller = caller_of(request.scope)
        try:
            generation = await self.memo.parse(route, request)
            controls = Controls.from_headers(
                request.headers,
                allow_cached_default=self.settings.cache.allow_cached_default,
                max_ttl=self.settings.cache.max_ttl_seconds,
            )
        except GatewayError as exc:
            return exc.response(v2=route.v2)
        generation = scoped(generation, caller, controls)
        headers: dict[str, str] = {}
        if self._variants_apply(generation, controls):
            generation, number = await self._variant(generation)
            headers["X-Cache-Variant"] = f"{number}/{self.settings.cache.variants}"
        record = access.current()
        if record is not None:
            record.key = generation.key
        headers["X-Cache-Key"] = generation.key
        try:
            if self.fetcher is not None and not controls.no_store:
                await self.fetcher.stored(generation)
            by_file = generation.want == "image" and zerocopy.offered(request.scope)
            found = None if controls.no_store else await self._lookup(generation.key, by_file)
            decision = self._decide(generation, controls, found)
            if isinstance(found, ImageFile) and decision.action is not Action.SERVE:
                found.close()  # not served from its file: what follows needs the bytes
                found = await self._lookup(generation.key)
                decision = self._decide(generation, controls, found)
            # Hits at DEBUG: they are the bulk of the traffic, and the access log has them.
            log.log(
                logging.DEBUG if decision.action is Action.SERVE else logging.INFO,
                "%s %s key=%s: %s", generation.route, generation.engine, generation.key[:16],
                decision.reason,
            )  # fmt: skip
            if isinstance(found, ImageFile):
                response = await self._serve_file(request, generation, found, caller)
            else:
                response = await self._act(
                    request, generation, route, controls, decision, found, caller
                )
        except GatewayError as exc:
            response = self._error(exc, route, headers, "BYPASS" if controls.no_store else "MISS")
        else:
            response.headers.update(headers)
        # What this answer cost upstream: 0 on hits, placeholders, errors and shared calls.
        response.headers.setdefault("X-Credits-Charged", "0")
        if record is not None:
            record.cache = response.headers.get("x-cache", "")
            record.credits = float(response.headers["x-credits-charged"])
        return response

    def _variants_apply(self, generation: Generation, controls: Controls) -> bool:
        return (
            self.settings.cache.random_seed_policy == "variants"
            and self.settings.mode == "online"
            and generation.random_seed
            and not (controls.no_store or controls.no_cache)
        )

    async def _variant(self, generation: Generation) -> tuple[Generation, int]:
        """Under `random_seed_policy = "variants"`: the first N random-seed requests for a
        key each fill a variant of their own (1..N, each its own entry: one upstream call
        each); later ones are served the variants in turn (per worker)."""
        count = self.settings.cache.variants
        keys = [variant_key(generation.key, i) for i in range(1, count + 1)]
        versions = []
        for key in keys:
            if self.fetcher is not None:  # a variant just answered is still being stored
                await self.fetcher.flights.finished(key, STORE_WAIT_SECONDS)
            try:
                versions.append(await self.entries.version(key))
            except (StoreError, CoordinationError):
                versions.append(None)
        missing = [i for i, version in enumerate(versions, start=1) if version is None]
        if missing:
            number = missing[0]
        else:
            turn = self._turns.pop(generation.key, 0)
            self._turns[generation.key] = turn + 1
            while len(self._turns) > MAX_VARIANT_TURNS:
                self._turns.pop(next(iter(self._turns)))
            number = turn % count + 1
        summary = {**generation.summary, "variant": number, "variants": count,
                   "variant_of": generation.key}  # fmt: skip
        return dataclasses.replace(generation, key=keys[number - 1], summary=summary), number

    def _decide(
        self, generation: Generation, controls: Controls, found: Entry | ImageFile | None
    ) -> Decision:
        return decide(
            mode=self.settings.mode,
            controls=controls,
            meta=found.meta if found else None,
            now=time.time(),
            ttl=self.settings.cache.ttl_seconds,
            refresh_random=self.settings.cache.random_seed_policy == "refresh",
            random_seed=generation.random_seed,
        )

    def _saved(self, generation: Generation, images: int, meta: EntryMeta | None,
               caller: str = "anonymous") -> None:  # fmt: skip
        """A hit: count the credits its images would have cost (not for placeholders)."""
        if meta is not None and meta.source != "upstream":
            return
        engine = str(generation.summary.get("engine") or generation.engine)
        credits = price_of(self.settings.prices, generation.route, engine) * images
        self.counters.saved(generation.key, generation.route, engine, caller, images, credits)
        if self.metrics is not None and credits:
            self.metrics.saved.labels(generation.route, caller).inc(credits)

    async def _lookup(self, key: str, by_file: bool = False) -> Entry | ImageFile | None:
        """The entry, from the memory tier when it is current; `by_file` (an answer that is
        the image, and a server that sends files): else its image as an open file, when
        the store has one. If the store cannot be read, a memory copy still serves (better
        than failing a request the cache could answer)."""
        try:
            if by_file:
                return await self.entries.get_image(key)
            return await self.entries.get(key)
        except (StoreError, CoordinationError) as exc:
            log.error("%s: cache lookup failed (%s); answering without the cache", exc.where, exc)
            return self.entries.tier.peek(key)

    async def _act(
        self,
        request: Request,
        generation: Generation,
        route: RouteSpec,
        controls: Controls,
        decision: Decision,
        entry: Entry | None,
        caller: Caller = ANONYMOUS_CALLER,
    ) -> Response:
        if decision.action is Action.SERVE:
            assert entry is not None
            refused = await self._refused_credential(request)
            if refused is not None:
                return refused
            self.counters.hit(generation.key, entry.nbytes)
            self._saved(generation, len(entry.artifacts), entry.meta, caller.name)
            return route.render(entry.artifacts, generation, {"X-Cache": "HIT"})
        if decision.action is Action.MISS:
            self.counters.count("misses")
            raise GatewayTimeout(
                f"not in the cache, and this request may not ask the upstream ({decision.reason})",
                name="not_cached",
            )
        if decision.action is Action.PLACEHOLDER:
            self.counters.count("misses")
            artifacts = await self._placeholder(generation, route, decision)
            return route.render(artifacts, generation, {"X-Cache": "OFFLINE"})
        if self.fetcher is None:  # replay and offline never decide to fetch
            raise GatewayTimeout("this gateway has no upstream", name="not_cached")
        # One budget for everything from here: waiting for another worker's call, the
        # limiter queue, retries.
        deadline = Deadline(self.settings.timeouts.deadline_seconds)
        fetching = self.fetcher.fetch(
            generation,
            route,
            request.headers,
            store=decision.store,
            seen=entry.version if entry is not None else None,
            deadline=deadline,
            fresh=decision.fresh,
            caller=caller,
            ticket=ticket_of(request.scope),
        )
        try:
            outcome, role = await unless_disconnected(request, fetching)
        except ClientGone:
            log.info("caller went away while waiting for key=%s", generation.key[:16])
            return Response(status_code=499)
        fallback = entry if decision.stale and controls.allow_cached else None
        response = self.respond(outcome, generation, route, decision, fallback)
        if role == "late" and isinstance(outcome, Fetched) and decision.store:
            # It came after the image was answered, while it is being stored: for this
            # request it was already there, a hit.
            response.headers["X-Cache"] = "HIT"
            self.counters.hit(generation.key, sum(len(a.data) for a in outcome.artifacts))
            self._saved(generation, len(outcome.artifacts), None, caller.name)
        elif role == "led" and not isinstance(outcome, Shared):
            self.counters.count("misses")
            if isinstance(outcome, Fetched | Refused) and outcome.credits:
                response.headers["X-Credits-Charged"] = f"{outcome.credits:g}"
        else:
            self.counters.count("coalesced")
            if self.metrics is not None:
                self.metrics.coalesced.inc()
            if isinstance(outcome, Shared):
                shared = outcome.entry
                self._saved(generation, len(shared.artifacts), shared.meta, caller.name)
        return response

    async def _serve_file(
        self, request: Request, generation: Generation, image: ImageFile, caller: Caller
    ) -> Response:
        """A hit answered from the image's file (the answer closes it once sent)."""
        try:
            refused = await self._refused_credential(request)
        except BaseException:
            image.close()
            raise
        if refused is not None:
            image.close()
            return refused
        self.counters.hit(generation.key, image.info.bytes)
        self._saved(generation, 1, image.meta, caller.name)
        if self.metrics is not None:
            self.metrics.from_file.inc()
        return ImageFileAnswer(image, {"X-Cache": "HIT"})

    async def _refused_credential(self, request: Request) -> Response | None:
        """Without a gateway key, a hit is served only to a caller whose own key Stability
        accepts (checked through the fetch path): the upstream's refusal otherwise."""
        if self.fetcher is None or self.settings.api_key:
            return None
        refused = await self.fetcher.check_credential(
            request.headers, Deadline(self.settings.timeouts.deadline_seconds)
        )
        return None if refused is None else forward(refused, {"X-Cache": "MISS"})

    async def _placeholder(
        self, generation: Generation, route: RouteSpec, decision: Decision
    ) -> Sequence[Artifact]:
        artifacts = await anyio.to_thread.run_sync(route.placeholder, generation)
        if decision.store:
            try:
                await self.entries.put(
                    generation.key, artifacts, generation.summary, source="offline",
                    ttl=generation.ttl,
                )  # fmt: skip
            except StoreError as exc:
                log.error("cache folder %s: could not store a placeholder (%s)", exc.where, exc)
        return artifacts

    def respond(
        self,
        outcome: Outcome,
        generation: Generation,
        route: RouteSpec,
        decision: Decision,
        fallback: Entry | None,
    ) -> Response:
        """The caller's answer for a fetch outcome, and its X-Cache value."""
        cache = "MISS" if decision.store else "BYPASS"
        record = access.current()
        if record is not None and not isinstance(outcome, Shared):
            record.attempts = outcome.attempts
        match outcome:
            case Shared(entry=entry):
                return route.render(entry.artifacts, generation, {"X-Cache": "HIT"})
            case Fetched(artifacts=artifacts, warning=warning):
                if record is not None:
                    record.upstream_status = 200
                headers = {"X-Cache": cache}
                if warning:
                    headers["Warning"] = f'199 stability-gateway "{warning}"'
                return route.render(artifacts, generation, headers)
            case Refused(response=response):
                if record is not None:
                    record.upstream_status = response.status_code
                    _note_upstream_error(response)
                if outcome.failed and fallback is not None:
                    why = f"upstream answered {response.status_code}"
                    return self._stale(generation, route, fallback, why)
                return forward(response, {"X-Cache": cache})
            case Failed(error=error):
                if (error.status >= 500 or error.status == 429) and fallback is not None:
                    return self._stale(generation, route, fallback, str(error))
                return self._error(error, route, {}, cache)
        raise AssertionError(f"unknown outcome {outcome!r}")  # pragma: no cover

    def _error(
        self, error: GatewayError, route: RouteSpec, headers: Mapping[str, str], cache: str
    ) -> Response:
        # Errors say how the cache took part too: no entry was served or written.
        return error.response(v2=route.v2, headers={**headers, "X-Cache": cache})

    def _stale(self, generation: Generation, route: RouteSpec, entry: Entry, why: str) -> Response:
        log.warning(
            "upstream failed (%s); serving the cached image for key=%s as a fallback (STALE)",
            why, generation.key[:16],
        )  # fmt: skip
        self.counters.count("stale_served")
        if self.metrics is not None:
            self.metrics.stale.inc()
        return route.render(
            entry.artifacts, generation, {"X-Cache": "STALE", "Warning": STALE_WARNING}
        )


def _note_upstream_error(response: httpx.Response) -> None:
    """Stability's own error name and id, for the access line."""
    if response.status_code < 400 or len(response.content) > 65536:
        return
    try:
        body = response.json()
    except ValueError:
        return
    if isinstance(body, dict):
        access.note_error(str(body.get("name", "")), str(body.get("id", "")))
