"""The gateway's own errors, each rendered in Stability's error shape.

    GatewayError                 root: status + Stability error name + message
    ├── BadRequest               400: bad JSON, bad parameters (invalid_sdxl_v1_dimensions, ...)
    ├── Unauthorized             401: inspection endpoints without the admin token
    ├── NotFound                 404: unknown route or cache key
    ├── PayloadTooLarge          413: request body over max_body_bytes
    ├── RateLimited              429: the shared queue would wait longer than allowed
    ├── UpstreamError            502: the upstream answered something unusable
    │   └── UpstreamUnavailable  503: connection refused/reset, retries exhausted
    ├── CoordinationUnavailable  503: the shared backend (Redis) cannot be reached, so no
    │                                 upstream call may be made (the limit fails closed)
    └── GatewayTimeout           504: only-if-cached/replay miss, upstream deadline passed

Upstream error *responses* (a 400 invalid_prompts from Stability, say) are not GatewayErrors:
they are passed through with the upstream's own status and body.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.http.access import note_error

if TYPE_CHECKING:  # the web stack is imported only when an error is rendered, so the CLI
    from starlette.responses import JSONResponse  # can use these errors without it


class GatewayError(Exception):
    status: int = 500
    name: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if name is not None:
            self.name = name
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    def body(self, ident: str, *, v2: bool = False) -> dict[str, object]:
        """v1 shape `{"id","name","message"}`; v2beta shape `{"id","name","errors"}`."""
        if v2:
            return {"id": ident, "name": self.name, "errors": [self.message]}
        return {"id": ident, "name": self.name, "message": self.message}

    def response(
        self, *, v2: bool = False, headers: Mapping[str, str] | None = None
    ) -> JSONResponse:
        """The error as Stability would answer it. Its id (32 hex, like Stability's own) is
        written to the access log too, so an error a caller reports can be found there."""
        from starlette.responses import JSONResponse

        ident = uuid.uuid4().hex
        note_error(self.name, ident, self.message if self.status < 500 else "")
        return JSONResponse(
            self.body(ident, v2=v2),
            status_code=self.status,
            headers={**self.headers, **(headers or {})},
        )


class BadRequest(GatewayError):
    status = 400
    name = "bad_request"


class Unauthorized(GatewayError):
    status = 401
    name = "unauthorized"


class NotFound(GatewayError):
    status = 404
    name = "not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    name = "payload_too_large"


class RateLimited(GatewayError):
    status = 429
    name = "rate_limited"


class UpstreamError(GatewayError):
    status = 502
    name = "bad_upstream_response"


class UpstreamUnavailable(UpstreamError):
    status = 503
    name = "upstream_unavailable"


class CoordinationUnavailable(GatewayError):
    status = 503
    name = "coordination_unavailable"


class GatewayTimeout(GatewayError):
    status = 504
    name = "gateway_timeout"
