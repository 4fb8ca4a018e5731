"""Named callers: who is asking, on the Stability routes.

A caller sends its token as `Authorization: Bearer <token>`, exactly where a Stability
client puts its key, so no client changes; the gateway knows only each token's SHA-256
(`[callers.NAME] token_sha256`). `CallerGate`, a pure ASGI middleware in front of the
Stability routes, turns the header into a `Caller`:

- a known token names its caller, and is taken out of the request: it is the gateway's,
  and must never be forwarded upstream (the gateway calls Stability with its own key);
- an unknown or missing one is `anonymous` (shared cache, interactive), unless
  `require_caller_token` is set: then 401 `unauthorized`, before any cache lookup;
- a caller over its own `requests_per_minute` gets 429 `rate_limited` with `Retry-After`,
  counted on the shared coordinator (a fixed one-minute window), without touching anyone
  else's requests.

The caller's name (never its token) then travels in `scope["state"]["caller"]`: the access
log, the metrics, the ledger, the fair queue and private cache keys read it from there.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from cache.interfaces import CoordinationError, Coordinator, Priority, Ticket
from gateway.config import CallerSettings, Settings
from gateway.errors import GatewayError, RateLimited, Unauthorized
from gateway.http import access
from gateway.http.forward import is_v2

STABILITY_PREFIXES = ("/v1/", "/v2beta/", "/v2/")
RPM_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Caller:
    name: str
    priority: Priority = "interactive"
    requests_per_minute: int = 0
    daily_credit_budget: float = 0
    private: bool = False
    known: bool = False

    def ticket(self, arrived: float | None = None) -> Ticket:
        return Ticket(self.name, self.priority, arrived)


ANONYMOUS = Caller("anonymous")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def _caller(name: str, settings: CallerSettings) -> Caller:
    priority: Priority = "batch" if settings.priority == "batch" else "interactive"
    return Caller(
        name,
        priority,
        settings.requests_per_minute,
        settings.daily_credit_budget,
        private=settings.cache_scope == "private",
        known=True,
    )


class Callers:
    def __init__(self, configured: Mapping[str, CallerSettings]) -> None:
        self.by_hash = {c.token_sha256: _caller(name, c) for name, c in configured.items()}

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller whose token this Authorization carries, or None."""
        if not authorization or not self.by_hash:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.by_hash.get(token_hash(token.strip()))


def caller_of(scope: Scope) -> Caller:
    """The caller CallerGate found for this request (anonymous outside the gate)."""
    state = scope.get("state") or {}
    caller = state.get("caller")
    return caller if isinstance(caller, Caller) else ANONYMOUS


def ticket_of(scope: Scope) -> Ticket:
    """The request's place in the fair queue: its caller, and when it reached the gateway."""
    state = scope.get("state") or {}
    arrived = state.get("arrived")
    return caller_of(scope).ticket(arrived if isinstance(arrived, float) else None)


class CallerGate:
    def __init__(self, app: ASGIApp, settings: Settings, coordinator: Coordinator) -> None:
        self.app = app
        self.callers = Callers(settings.callers)
        self.required = settings.gateway.require_caller_token
        self.coordinator = coordinator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(STABILITY_PREFIXES):
            await self.app(scope, receive, send)
            return
        arrived = time.time()  # its place in its caller's queue, whichever worker has it
        authorization = None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                authorization = value.decode("latin-1")
        caller = self.callers.identify(authorization)
        v2 = is_v2(scope["path"])
        if caller is None and self.required:
            refused: GatewayError = Unauthorized(
                "this gateway needs a caller token: send Authorization: Bearer <token> "
                "(ask its operator for one)"
            )
            await refused.response(v2=v2)(scope, receive, send)
            return
        if caller is not None:
            # The token is the gateway's: it never goes further (upstream, logs, keys).
            # The scope is changed in place: the access log reads the route from it after.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
        caller = caller or ANONYMOUS
        if caller.requests_per_minute:
            over = await self._over_rate(caller)
            if over is not None:
                await over.response(v2=v2)(scope, receive, send)
                return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["caller"] = caller
        state["arrived"] = arrived
        record = access.current()
        if record is not None:
            record.caller = caller.name
        await self.app(scope, receive, send)

    async def _over_rate(self, caller: Caller) -> GatewayError | None:
        now = time.time()
        window = math.floor(now / RPM_WINDOW_SECONDS)
        name = f"rpm:{caller.name}:{window}"
        try:
            allowed = await self.coordinator.add_within(
                name, 1, caller.requests_per_minute, RPM_WINDOW_SECONDS * 2
            )
        except CoordinationError:
            return None  # the shared upstream limit still holds; do not fail the caller
        if allowed:
            return None
        retry = max(1, math.ceil((window + 1) * RPM_WINDOW_SECONDS - now))
        return RateLimited(
            f"caller {caller.name} is over its own limit of {caller.requests_per_minute} "
            f"requests a minute; retry after {retry} s",
            headers={"Retry-After": str(retry)},
        )
