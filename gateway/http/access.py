"""One access line per request, written by the gateway (uvicorn's own is off).

The middleware opens an `AccessRecord` for each request and writes it out when the answer
has been sent; the code that knows a detail (the pipeline: cache outcome, key, upstream
status and attempts; an error: its name and id) fills it in through `current()`. The key is
logged as a 16-hex prefix; credentials are never part of a record.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gateway.access")

QUIET_PATHS = ("/healthz", "/metrics")  # logged at DEBUG: probes and scrapers are frequent


@dataclass
class AccessRecord:
    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    route: str = ""
    status: int = 0
    cache: str = ""
    key: str = ""
    upstream_status: int | None = None
    attempts: int = 0
    credits: float | None = None
    caller: str = ""
    error_name: str = ""
    error_id: str = ""
    reason: str = ""

    def fields(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "method": self.method,
            "path": self.path,
            "route": self.route,
            "status": self.status,
            "cache": self.cache or None,
            "key": self.key[:16] or None,
            "duration_ms": round((time.monotonic() - self.started) * 1000, 1),
            "upstream_status": self.upstream_status,
            "attempts": self.attempts,
            "credits": self.credits,
            "caller": self.caller or None,
            "error_name": self.error_name or None,
            "error_id": self.error_id or None,
            "reason": self.reason or None,
        }

    def line(self) -> str:
        f = self.fields()
        parts = [
            f"pid={f['pid']}",
            f"{self.method} {self.path}",
            str(self.status),
            f"cache={f['cache'] or '-'}",
            f"key={f['key'] or '-'}",
            f"{f['duration_ms']}ms",
            f"upstream={self.upstream_status if self.upstream_status is not None else '-'}",
            f"attempts={self.attempts}",
        ]
        if self.caller:
            parts.append(f"caller={self.caller}")
        if self.credits is not None:
            parts.append(f"credits={self.credits:g}")
        if self.error_name:
            parts.append(f"error={self.error_name} id={self.error_id or '-'}")
        if self.reason:
            parts.append(f"reason={self.reason!r}")
        return " ".join(parts)


_current: contextvars.ContextVar[AccessRecord | None] = contextvars.ContextVar(
    "access_record", default=None
)


def current() -> AccessRecord | None:
    """The record of the request being handled (None outside a request)."""
    return _current.get()


def note_error(name: str, ident: str, reason: str = "") -> None:
    record = current()
    if record is not None:
        record.error_name, record.error_id = name, ident
        if reason:
            record.reason = reason


Observe = Callable[[str, int, str, str, float], None]


class AccessLog:
    """Pure ASGI middleware: one line per HTTP request, after its answer was sent, and the
    same facts to `observe` (route, status, cache, caller, seconds: the metrics)."""

    def __init__(self, app: ASGIApp, observe: Observe | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = AccessRecord(scope["method"], scope["path"])
        token = _current.set(record)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _current.reset(token)
            route = scope.get("route")
            record.route = getattr(route, "path", "") or ""
            if record.status == 0:
                record.status = 499 if not record.error_name else 500
            fields = record.fields()
            level = logging.DEBUG if record.path in QUIET_PATHS else logging.INFO
            log.log(level, "%s", record.line(), extra=fields)
            if self.observe is not None:
                self.observe(record.route, record.status, record.cache, record.caller,
                             fields["duration_ms"] / 1000)  # fmt: skip
