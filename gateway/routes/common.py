"""Helpers shared by the route families: reading bodies, choosing the answer format."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from gateway.errors import BadRequest


async def read_json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if not body:
        raise BadRequest("the request body is empty; expected a JSON object")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def wants_image(request: Request, *, image_types: tuple[str, ...]) -> bool:
    """True when the caller's Accept asks for raw image bytes rather than JSON.

    No Accept, `*/*` and `application/json` mean JSON, as on the real API.
    """
    accept = request.headers.get("accept", "").lower()
    if not accept:
        return False
    for part in accept.split(","):
        media = part.split(";")[0].strip()
        if media == "application/json":
            return False
        if media in image_types:
            return True
    return False
