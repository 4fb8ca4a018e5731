"""The fetch path: one upstream call for a key, shared by everyone who asks for it at once,
its answer decoded and checked, then stored.

    fetch(generation) -> (Outcome, role in the flight)
      in this process   SingleFlight: one task per key; callers share its outcome
      across processes  a Lease per key (short, renewed while the holder works); a request
                        that finds it taken waits for its release and reads the holder's
                        entry back from the store
      the call          UpstreamClient: rate limit + retries, within the request's Deadline
      the answer        route.decode -> checks (count, size, format, PNG CRCs) -> answer ->
                        full decode -> store (the answer does not wait for the disk when the
                        store has room; when it is known to be failing, the store is tried
                        first so the answer can say it was not cached)

Every way this can end is one `Outcome`; `respond` in gateway.pipeline turns it into the
caller's answer and its X-Cache value:

    Shared   another worker's flight stored it; read back from the store
    Fetched  a fresh image, stored or not (and why not)
    Refused  the upstream answered an error, or a job id: passed on as sent
    Failed   no usable answer (timeout, unreachable, an unusable body): a GatewayError
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio.to_thread
import httpx

from cache.interfaces import (
    CoordinationError,
    Coordinator,
    LedgerRecord,
    StoreError,
    Ticket,
)
from cache.lease import Lease
from cache.memory import TieredEntryStore
from cache.model import Artifact, Entry
from gateway.callers import ANONYMOUS as ANONYMOUS_CALLER
from gateway.callers import Caller
from gateway.config import Settings
from gateway.counters import Counters
from gateway.credits import Attempt, Budget, attempt_charges, price_of
from gateway.deadline import Deadline
from gateway.errors import CoordinationUnavailable, GatewayError, GatewayTimeout, UpstreamError
from gateway.generation import Decoder, Generation, RouteSpec, UpstreamRequest
from gateway.images import check_image
from gateway.jobs import JobBook, job_id
from gateway.metrics import Metrics
from gateway.singleflight import Flight, Role, SingleFlight
from gateway.upstream import UpstreamClient

log = logging.getLogger("gateway.fetch")

CONTENT_POLICY_ERRORS = ("invalid_prompts", "content_moderation")
CREDENTIAL_TTL_SECONDS = 24 * 3600
STORE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class Call:
    """What one upstream call carries beside the request: the caller's headers (for its
    credential when the gateway has no key), its place in the fair queue, the budgets it
    is held to, and the request's deadline."""

    headers: Mapping[str, str]
    ticket: Ticket
    credential: str
    budgets: Sequence[Budget]
    deadline: Deadline


@dataclass(frozen=True)
class Shared:
    entry: Entry


@dataclass(frozen=True)
class Fetched:
    artifacts: Sequence[Artifact]
    attempts: int
    stored: bool | None  # None: being stored after the answer
    warning: str | None = None  # why it was not stored, for the caller's Warning header
    credits: float = 0.0  # what the upstream charged for it


@dataclass(frozen=True)
class Refused:
    response: httpx.Response
    attempts: int
    job: str | None = None
    credits: float = 0.0  # a job is charged when it starts

    @property
    def failed(self) -> bool:
        """An upstream failure a cached fallback may cover (not a refusal of the request)."""
        return self.response.status_code >= 500 or self.response.status_code == 429


@dataclass(frozen=True)
class Failed:
    error: GatewayError
    attempts: int = 0


Outcome = Shared | Fetched | Refused | Failed


def credential_hash(authorization: str | bytes) -> str:
    raw = authorization if isinstance(authorization, bytes) else authorization.encode("latin-1")
    return hashlib.sha256(raw).hexdigest()


def log_refusal(response: httpx.Response, generation: Generation) -> None:
    """Content-policy refusals are logged with their prompt (the seeds ask for it)."""
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


class Fetcher:
    def __init__(
        self,
        settings: Settings,
        entries: TieredEntryStore,
        coordinator: Coordinator,
        upstream: UpstreamClient,
        counters: Counters,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.budget = Budget(coordinator, settings.gateway.daily_credit_budget)
        self.entries = entries
        self.coordinator = coordinator
        self.upstream = upstream
        self.counters = counters
        self.jobs = JobBook(coordinator)
        self.flights: SingleFlight[Outcome] = SingleFlight()

    def credential(self, caller: Mapping[str, str]) -> str:
        """SHA-256 of the Authorization that goes upstream for this caller ("" when the
        gateway uses its own key: then everyone calls upstream the same way)."""
        if self.settings.api_key:
            return ""
        authorization = self.upstream.headers_for(caller, "application/json").get(
            "authorization", b""
        )
        return credential_hash(authorization)

    async def fetch(
        self,
        generation: Generation,
        route: RouteSpec,
        headers: Mapping[str, str],
        *,
        store: bool,
        seen: str | None,
        deadline: Deadline,
        fresh: bool = False,
        caller: Caller = ANONYMOUS_CALLER,
        ticket: Ticket | None = None,
    ) -> tuple[Outcome, Role]:
        """The outcome for this request, and its role in the flight (see SingleFlight.run:
        it led the work, or shared another request's). `seen` is the version of the entry
        found at lookup (None: none), so any other version stored meanwhile is new to this
        request. A `fresh` request (no-cache, a random seed under the refresh policy) takes
        no other request's result but that of a call still under way when it came. The
        `caller` takes its turn in the fair queue, and is held to its own budget too."""
        credential = self.credential(headers)
        budgets = [self.budget]
        if caller.daily_credit_budget:
            budgets.append(Budget(self.coordinator, caller.daily_credit_budget, caller.name))
        call = Call(headers, ticket or caller.ticket(), credential, budgets, deadline)

        async def work(flight: Flight[Outcome]) -> Outcome:
            if not store:
                return await self._call(flight, generation, route, call, store=False)
            async with Lease(
                self.coordinator, f"flight:{generation.key}", self.settings.timeouts.lease_seconds
            ) as lease:
                try:
                    shared = await self._claim(lease, generation, seen, deadline, fresh)
                except (GatewayTimeout, CoordinationUnavailable) as exc:
                    return Failed(exc)
                if shared is not None:
                    return Shared(shared)
                return await self._call(flight, generation, route, call, store=True)

        key = self._flight_key(generation, credential) if store else uuid.uuid4().hex
        return await self.flights.run(key, work, join_late=not fresh)

    def _flight_key(self, generation: Generation, credential: str) -> str:
        """Who may share one call: with its own key the gateway calls upstream the same way
        for everyone; without one, only callers with the same credential (and its 401).
        (A request that may not store shares with nobody.)"""
        return f"{generation.key}:{credential}" if credential else generation.key

    async def stored(self, generation: Generation) -> None:
        """Read-your-writes within this process: if this key's image was just answered and
        is still being stored, wait for the store (a few ms) before looking it up."""
        await self.flights.finished(generation.key, STORE_WAIT_SECONDS)

    async def _claim(
        self,
        lease: Lease,
        generation: Generation,
        seen: str | None,
        deadline: Deadline,
        fresh: bool = False,
    ) -> Entry | None:
        """Take the key's lease, or wait for its holder and read what it stored.

        Looked for after taking the lease, not only before: the holder may have stored and
        released between this request's lookup and its acquire. Without the coordination
        backend (a full disk), the request goes on without a lease: this process's own
        single-flight still holds, and the limiter still bounds the upstream's load. A
        backend that fails closed (Redis) instead refuses: 503 coordination_unavailable.
        """
        while True:
            try:
                if await lease.acquire():
                    if fresh:
                        return None
                    found = await self._stored_since(generation.key, seen)
                    if found is not None:
                        await lease.release()
                    return found
                await self.coordinator.wait_released(lease.name, max(deadline.remaining(), 0))
            except CoordinationError as exc:
                if self.coordinator.fails_closed:
                    log.error("%s: single-flight lease unavailable (%s); refusing the call",
                              exc.where, exc)  # fmt: skip
                    raise CoordinationUnavailable(
                        f"the shared backend ({exc.where}) cannot be reached ({exc}): no "
                        "upstream call is made without it; retry shortly"
                    ) from exc
                log.error("%s: single-flight lease unavailable (%s); calling without it",
                          exc.where, exc)  # fmt: skip
                return None
            found = None if fresh else await self._stored_since(generation.key, seen)
            if found is not None:
                return found
            if deadline.expired:
                raise deadline.error()

    async def _stored_since(self, key: str, seen: str | None) -> Entry | None:
        try:
            version = await self.entries.version(key)
            if version is None or version == seen:
                return None
            entry = await self.entries.get(key)
        except StoreError:
            return None
        if entry is None or entry.version == seen or entry.meta.source == "offline":
            return None
        return entry

    def price(self, generation: Generation) -> float:
        """Credits per image of this request's route and engine (model)."""
        engine = str(generation.summary.get("engine") or generation.engine)
        return price_of(self.settings.prices, generation.route, engine)

    async def _call(
        self,
        flight: Flight[Outcome],
        generation: Generation,
        route: RouteSpec,
        call: Call,
        *,
        store: bool,
    ) -> Outcome:
        price = self.price(generation)
        reservations = []
        try:
            for budget in call.budgets:
                reservations.append((budget, await budget.reserve(price * generation.samples)))
        except GatewayError as exc:
            for budget, reservation in reservations:
                await budget.settle(reservation, 0.0)
            return Failed(exc)
        headers, deadline, ticket, credential = (
            call.headers,
            call.deadline,
            call.ticket,
            call.credential,
        )
        tries: list[Attempt] = []
        charged: float | None = 0.0
        try:
            try:
                answer = await self.upstream.send(
                    generation.upstream, headers, deadline=deadline, ticket=ticket,
                    on_send=flight.commit, tries=tries,
                )  # fmt: skip
            except GatewayError as exc:
                charged = None if any(t.status is None and t.sent for t in tries) else 0.0
                return Failed(exc, len(tries))
            response = answer.response
            job = job_id(response)
            if job is not None:  # the image comes later, from GET /v2beta/results/{job}
                charged = price * generation.samples  # a job is paid for when it starts
                if store:
                    await self._remember_job(job, generation, credential)
                log.info("upstream started job %s for key=%s", job, generation.key[:16])
                return Refused(response, answer.attempts, job=job, credits=charged)
            if response.status_code != 200:
                log_refusal(response, generation)
                return Refused(response, answer.attempts)
            if credential:
                await self.remember_credential(credential)
            outcome = await self.accept(
                flight, route, response, generation, answer.attempts, store=store, price=price
            )
            # An answer that failed our checks was still paid for; filtered images are not.
            charged = (
                outcome.credits if isinstance(outcome, Fetched) else price * generation.samples
            )
            return outcome
        finally:
            self._record(generation, tries, charged, ticket.caller)
            for budget, reservation in reservations:
                await budget.settle(reservation, charged)

    def _record(
        self, generation: Generation, tries: Sequence[Attempt], charged: float | None, caller: str
    ) -> None:
        """One ledger record per upstream attempt of this call."""
        now = time.time()
        engine = str(generation.summary.get("engine") or generation.engine)
        for status, credits in attempt_charges(tries, charged):
            images = generation.samples if status == 200 else 0
            self.counters.charged(LedgerRecord(
                now, "call", generation.route, engine, generation.key, status, images,
                credits, caller,
            ))  # fmt: skip
            if credits and self.metrics is not None:
                self.metrics.spent.labels(generation.route, caller).inc(credits)

    async def accept(
        self,
        flight: Flight[Outcome] | None,
        route: Decoder,
        response: httpx.Response,
        generation: Generation,
        attempts: int,
        *,
        store: bool,
        price: float = 0.0,
    ) -> Outcome:
        """Decode and check a 200 answer, publish it, store it: the one place where an
        upstream image becomes a cached one (job results included). `price` per image is
        what the answer's credits come to (filtered images are not charged)."""
        try:
            artifacts = await anyio.to_thread.run_sync(self._decode, route, response, generation)
        except UpstreamError as exc:
            return Failed(exc, attempts)
        credits = price * sum(a.finish_reason == "SUCCESS" for a in artifacts)
        if not store:
            return Fetched(artifacts, attempts, stored=False, credits=credits)
        if not all(a.finish_reason == "SUCCESS" for a in artifacts):
            log.warning(
                "not caching key=%s: finish reasons %s", generation.key[:16],
                [a.finish_reason for a in artifacts],
            )  # fmt: skip
            return Fetched(artifacts, attempts, stored=False, credits=credits)
        nbytes = sum(len(a.data) for a in artifacts)
        if flight is not None and self.entries.ready_for(nbytes):
            # Answer first: the caller's answer does not wait for the disk. The lease is
            # held until the entry is stored, so other workers read it once it is whole.
            flight.publish(Fetched(artifacts, attempts, stored=None, credits=credits))
        warning = await self._store(generation, artifacts)
        return Fetched(
            artifacts, attempts, stored=warning is None, warning=warning, credits=credits
        )

    def _decode(
        self, route: Decoder, response: httpx.Response, generation: Generation
    ) -> list[Artifact]:
        try:
            artifacts = route.decode(response, generation)
            if len(artifacts) != generation.samples:
                raise UpstreamError(
                    f"upstream sent {len(artifacts)} images, {generation.samples} were asked for"
                )
            # Every pixel checked, not just the PNG CRCs walked: an image nothing can open
            # is never served, let alone cached (about 7 ms for a 2.6 MB PNG, most of it
            # the inflate; see bench/README.md).
            for artifact in artifacts:
                check_image(
                    artifact.data,
                    expected_size=generation.expected_size,
                    formats=generation.expected_formats,
                    full=True,
                )
        except UpstreamError as exc:
            log.error("unusable upstream answer for key=%s: %s", generation.key[:16], exc)
            raise
        return artifacts

    async def _store(self, generation: Generation, artifacts: Sequence[Artifact]) -> str | None:
        """Store the entry; None when stored, else why not (logged, counted)."""
        try:
            await self.entries.put(
                generation.key, artifacts, generation.summary, ttl=generation.ttl
            )
        except StoreError as exc:
            self.counters.count("store_failures")
            log.error(
                "cache folder %s: could not store key=%s (%s); the image was answered but "
                "not cached", exc.where, generation.key[:16], exc,
            )  # fmt: skip
            return f"not cached: {exc}"
        return None

    async def _remember_job(self, job: str, generation: Generation, credential: str) -> None:
        try:
            await self.jobs.remember(job, generation, credential)
        except CoordinationError as exc:
            log.error("%s: could not record job %s (%s)", exc.where, job, exc)

    async def remember_credential(self, credential: str) -> None:
        """Note that the upstream accepted this credential (its hash only), for a day."""
        try:
            await self.coordinator.remember("credential", credential, {}, CREDENTIAL_TTL_SECONDS)
        except CoordinationError as exc:
            log.debug("could not remember an accepted credential: %s", exc)

    async def check_credential(
        self, caller: Mapping[str, str], deadline: Deadline
    ) -> httpx.Response | None:
        """None when the upstream has accepted this caller's credential within a day;
        otherwise ask a route that costs no credit (GET /v1/user/account) and return its
        refusal (the caller's 401) if it does not accept it now either."""
        credential = self.credential(caller)
        if not credential:
            return None
        try:
            if await self.coordinator.recall("credential", credential) is not None:
                return None
        except CoordinationError:
            pass
        answer = await self.upstream.send(
            UpstreamRequest("GET", "/v1/user/account", route="v1/user/account"),
            caller,
            deadline=deadline,
        )
        if answer.response.status_code == 200:
            await self.remember_credential(credential)
            return None
        return answer.response
