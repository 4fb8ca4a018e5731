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

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass

import anyio.to_thread
import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cache.store import Artifact, DiskStore, Entry
from gateway.config import Settings
from gateway.errors import GatewayError, GatewayTimeout
from gateway.generation import UpstreamRequest
from gateway.images import check_decodes, check_image
from gateway.jobs import Job, JobBook, job_id
from gateway.routes.common import result_id, wants_json_v2
from gateway.routes.stable_image import decode_v2, render_v2
from gateway.upstream import UpstreamClient

ENGINES_TTL_SECONDS = 60.0
MAX_ENGINE_LISTS = 256  # distinct credentials whose engine list is held in memory
# Upstream headers worth passing back with an answer; hop-by-hop and length are not.
KEPT_HEADERS = ("content-type", "retry-after", "x-request-id", "finish-reason", "seed")
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


def forward(response: httpx.Response, headers: dict[str, str]) -> Response:
    """The upstream's answer as sent (status, body, content type), plus our headers."""
    kept = {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
    return Response(response.content, status_code=response.status_code, headers={**kept, **headers})


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

    def _credential(self, caller: dict[str, str]) -> str:
        assert self.upstream is not None
        authorization = self.upstream.headers_for(caller, "application/json").get(
            "authorization", ""
        )
        raw = authorization if isinstance(authorization, bytes) else authorization.encode()
        return hashlib.sha256(raw).hexdigest()

    async def engines(self, request: Request) -> Response:
        if self.upstream is None:
            return JSONResponse(offline_engines(self.known_engines), headers={"X-Cache": "OFFLINE"})
        caller = dict(request.headers)
        credential = self._credential(caller)
        held = self._engines.get(credential)
        if held is not None and held.expires > time.monotonic():
            return Response(held.body, media_type=held.content_type, headers={"X-Cache": "HIT"})
        response = await self.upstream.passthrough(
            "GET", request.url.path, caller, request.url.query
        )
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
        response = await self.upstream.passthrough(
            "GET", request.url.path, dict(request.headers), request.url.query
        )
        return forward(response, {"X-Cache": "BYPASS"})


class Results:
    """GET /v2beta/results/{id}: job results, stored once finished."""

    def __init__(
        self, settings: Settings, store: DiskStore, upstream: UpstreamClient | None
    ) -> None:
        self.mode = settings.mode
        self.store = store
        self.upstream = upstream
        self.jobs = JobBook(store.state)

    def routes(self) -> list[Route]:
        return [Route("/v2beta/results/{id}", self.results, methods=["GET"])]

    async def results(self, request: Request) -> Response:
        try:
            return await self._results(request, result_id(request))
        except GatewayError as exc:
            return exc.response(v2=True)

    async def _results(self, request: Request, job: str) -> Response:
        want = "json" if wants_json_v2(request) else "image"
        known = await anyio.to_thread.run_sync(self.jobs.get, job)
        entry = await anyio.to_thread.run_sync(self.store.get, known.key if known else job)
        # A bare id is a cache key only for job routes: their cached answers hand out the
        # key as the id to poll.
        if entry is not None and (known is not None or entry.meta.get("job")):
            headers = {"X-Cache": "HIT", "X-Cache-Key": entry.key}
            return render_v2(entry.artifacts[0], want, headers)
        if self.upstream is None:
            raise GatewayTimeout(
                f"the result of {job} is not in the cache, and in {self.mode} mode the "
                "gateway has no upstream to ask",
                name="not_cached",
            )
        path = f"/v2beta/results/{job}"
        caller = dict(request.headers)
        if known is None:  # not a job of ours: a plain pass-through, in the caller's format
            accept = request.headers.get("accept") or "image/*"
            response = await self.upstream.send(UpstreamRequest("GET", path, accept=accept), caller)
            return forward(response, {"X-Cache": "BYPASS"})
        response = await self.upstream.send(UpstreamRequest("GET", path), caller)
        headers = {"X-Cache": "MISS", "X-Cache-Key": known.key}
        if response.status_code != 200 or job_id(response) is not None:
            return forward(response, headers)  # still running (202), expired (404), ...
        artifacts = await anyio.to_thread.run_sync(self._finish, response, known, path)
        return render_v2(artifacts[0], want, headers)

    def _finish(self, response: httpx.Response, job: Job, path: str) -> list[Artifact]:
        """Decode and check the finished image; store it under the job's key. Blocking."""
        generation = job.generation(path, "json")
        artifacts = decode_v2(response, generation)
        for artifact in artifacts:
            check_image(
                artifact.data,
                expected_size=generation.expected_size,
                formats=generation.expected_formats,
            )
        if all(a.finish_reason == "SUCCESS" for a in artifacts):
            check_decodes(*(a.data for a in artifacts))
            self.store.put(Entry(job.key, artifacts, {**job.summary, "source": "upstream"}))
        return artifacts
