"""The routes that are not generations: account, balance, engines, and job results.

    GET /v1/engines/list     passed through; 200 answers kept 60 s in memory, per credential
    GET /v1/user/account     passed through, never cached (it is one caller's account)
    GET /v1/user/balance     passed through, never cached (it changes with every image)
    GET /v2beta/results/{id} passed through; a finished image of a job the gateway started
                             is stored under the original request's key (see gateway.jobs)

Every upstream call goes through the UpstreamClient: the shared rate limit and retries
apply as for generations. The engines cache is keyed by a SHA-256 of the Authorization that
goes upstream (the gateway's key, or the caller's when the gateway has none), never the key
itself, so one caller's answer never reaches another credential.

Offline and replay modes have no upstream: engines/list answers a static list, account and
balance answer 503 `offline_mode` (there is no account to show, and an invented balance
could be mistaken for a real one), and results are served only from the cache.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cache.interfaces import StoreError
from cache.memory import TieredEntryStore
from gateway.callers import ticket_of
from gateway.config import Settings
from gateway.deadline import Deadline
from gateway.errors import GatewayError, GatewayTimeout, NotFound
from gateway.fetch import Failed, Fetched, Fetcher, credential_hash
from gateway.generation import UpstreamRequest, Want
from gateway.http.forward import forward
from gateway.jobs import job_id
from gateway.routes.common import result_id, wants_json_v2
from gateway.routes.stable_image import V2_JSON_ANSWER, render_v2
from gateway.upstream import UpstreamClient

ENGINES_TTL_SECONDS = 60.0
RESULTS_ROUTE = "v2beta/results/{id}"
MAX_ENGINE_LISTS = 256  # distinct credentials whose engine list is held in memory
# Display names for the engines offline mode lists (which engines: `[gateway] engines`).
ENGINE_NAMES: dict[str, tuple[str, str]] = {
    "stable-diffusion-xl-1024-v1-0": ("Stable Diffusion XL 1.0", "Stable Diffusion XL v1.0"),
    "stable-diffusion-v1-6": ("Stable Diffusion 1.6", "Stable Diffusion v1.6"),
    "esrgan-v1-x2plus": ("Real-ESRGAN x2", "Real-ESRGAN x2 upscaler"),
    "stable-diffusion-x4-latent-upscaler": (
        "Stable Diffusion x4 Latent Upscaler",
        "Stable Diffusion x4 latent upscaler",
    ),
}


def offline_engines(engines: tuple[str, ...]) -> list[dict[str, str]]:
    """/v1/engines/list without an upstream: the engines the gateway knows, in Stability's
    shape."""
    return [
        {
            "id": engine,
            "name": ENGINE_NAMES.get(engine, (engine, engine))[0],
            "description": ENGINE_NAMES.get(engine, (engine, engine))[1],
            "type": "PICTURE",
        }
        for engine in engines
    ]


@dataclass(frozen=True)
class _Held:
    expires: float
    body: bytes
    content_type: str


class AccountPassThrough:
    """engines/list, user/account and user/balance."""

    def __init__(
        self, settings: Settings, upstream: UpstreamClient | None, ttl: float = ENGINES_TTL_SECONDS
    ) -> None:
        self.mode = settings.mode
        self.deadline_seconds = settings.timeouts.deadline_seconds
        self.known_engines = settings.gateway.engines
        self.upstream = upstream
        self.ttl = ttl
        self._engines: OrderedDict[str, _Held] = OrderedDict()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/engines/list", self.engines, methods=["GET"]),
            Route("/v1/user/account", self.account, methods=["GET"]),
            Route("/v1/user/balance", self.account, methods=["GET"]),
        ]

    def _credential(self, caller: Mapping[str, str]) -> str:
        assert self.upstream is not None
        authorization = self.upstream.headers_for(caller, "application/json").get(
            "authorization", b""
        )
        return credential_hash(authorization)

    async def _pass(self, request: Request) -> httpx.Response:
        assert self.upstream is not None
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        answer = await self.upstream.send(
            UpstreamRequest("GET", path, route=request.url.path.lstrip("/")), request.headers,
            deadline=Deadline(self.deadline_seconds), ticket=ticket_of(request.scope),
        )  # fmt: skip
        return answer.response

    async def engines(self, request: Request) -> Response:
        if self.upstream is None:
            return JSONResponse(offline_engines(self.known_engines), headers={"X-Cache": "OFFLINE"})
        credential = self._credential(request.headers)
        held = self._engines.get(credential)
        if held is not None and held.expires > time.monotonic():
            return Response(held.body, media_type=held.content_type, headers={"X-Cache": "HIT"})
        if held is not None:
            del self._engines[credential]
        response = await self._pass(request)
        if response.status_code == 200:
            self._hold(credential, response)
        return forward(response, {"X-Cache": "MISS"})

    def _hold(self, credential: str, response: httpx.Response) -> None:
        content_type = response.headers.get("content-type", "application/json")
        self._engines[credential] = _Held(
            time.monotonic() + self.ttl, response.content, content_type
        )
        self._engines.move_to_end(credential)
        while len(self._engines) > MAX_ENGINE_LISTS:
            self._engines.popitem(last=False)

    async def account(self, request: Request) -> Response:
        if self.upstream is None:
            raise GatewayError(
                f"{request.url.path} is not available in {self.mode} mode: the gateway "
                "has no upstream, so there is no account or balance to show",
                name="offline_mode",
                status=503,
            )
        return forward(await self._pass(request), {"X-Cache": "BYPASS"})


class Results:
    """GET /v2beta/results/{id}: job results, stored once finished."""

    def __init__(
        self,
        settings: Settings,
        entries: TieredEntryStore,
        fetcher: Fetcher | None,
    ) -> None:
        self.settings = settings
        self.mode = settings.mode
        self.entries = entries
        self.fetcher = fetcher

    def routes(self) -> list[Route]:
        return [Route("/v2beta/results/{id}", self.results, methods=["GET"])]

    async def results(self, request: Request) -> Response:
        try:
            return await self._results(request, result_id(request))
        except GatewayError as exc:
            return exc.response(v2=True)

    async def _results(self, request: Request, job: str) -> Response:
        want: Want = "json" if wants_json_v2(request) else "image"
        known = await self.fetcher.jobs.get(job) if self.fetcher is not None else None
        if (
            known is not None
            and known.credential
            and credential_hash(_authorization(request)) != known.credential
        ):
            # Callers forward their own keys: a job's result is for the one who asked.
            raise NotFound(f"no result with id {job}", name="not_found")
        try:
            entry = await self.entries.get(known.key if known else job)
        except StoreError:
            entry = None
        # A bare id is a cache key only for job routes: their cached answers hand out the
        # key as the id to poll.
        if entry is not None and (known is not None or entry.meta.summary.get("job")):
            if self.fetcher is not None and not self.settings.api_key and known is None:
                refused = await self.fetcher.check_credential(
                    request.headers, Deadline(self.settings.timeouts.deadline_seconds)
                )
                if refused is not None:
                    return forward(refused, {"X-Cache": "MISS"})
            headers = {"X-Cache": "HIT", "X-Cache-Key": entry.key}
            return render_v2(entry.artifacts[0], want, headers)
        if self.fetcher is None:
            raise GatewayTimeout(
                f"the result of {job} is not in the cache, and in {self.mode} mode the "
                "gateway has no upstream to ask",
                name="not_cached",
            )
        path = f"/v2beta/results/{job}"
        deadline = Deadline(self.settings.timeouts.deadline_seconds)
        upstream = self.fetcher.upstream
        if known is None:  # not a job of ours: a plain pass-through, in the caller's format
            accept = request.headers.get("accept") or "image/*"
            answer = await upstream.send(
                UpstreamRequest("GET", path, accept=accept, route=RESULTS_ROUTE),
                request.headers,
                deadline=deadline,
                ticket=ticket_of(request.scope),
            )
            return forward(answer.response, {"X-Cache": "BYPASS"})
        answer = await upstream.send(
            UpstreamRequest("GET", path, route=RESULTS_ROUTE),
            request.headers,
            deadline=deadline,
            ticket=ticket_of(request.scope),
        )
        response = answer.response
        headers = {"X-Cache": "MISS", "X-Cache-Key": known.key}
        if response.status_code != 200 or job_id(response) is not None:
            return forward(response, headers)  # still running (202), expired (404), ...
        generation = known.generation(path, "json")
        outcome = await self.fetcher.accept(
            None, V2_JSON_ANSWER, response, generation, answer.attempts, store=True
        )
        if isinstance(outcome, Failed):
            raise outcome.error
        assert isinstance(outcome, Fetched)
        return render_v2(outcome.artifacts[0], want, headers)


def _authorization(request: Request) -> str:
    return request.headers.get("authorization", "")
