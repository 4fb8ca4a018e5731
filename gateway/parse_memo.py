"""Parsed requests remembered by their bytes, so that a repeated request skips parsing.

Most traffic is cache hits, and a hit repeats a request the gateway has parsed before:
the same path, the same body, the same Accept. Parsing it again (JSON, validation, filling
in defaults, normalising, hashing the key) was about 60 us of a PNG hit's 225 us in the
app (bench/README.md, "Profiling the hit path"). A route opts in by naming, in
`memo_headers`, every request header its `parse` reads; its parse must then depend on
nothing but those headers, the path, the query and the body (the app's settings are fixed
for its life). Only successful parses are remembered: a refused request is parsed, and
refused, every time.

The Generation handed out is shared by every request with the same bytes, so nothing may
change it in place: the pipeline derives a request's own copy (its scope, its variant)
with `dataclasses.replace`, and everything else only reads it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

from starlette.requests import Request

from gateway.generation import Generation, RouteSpec

MEMO_ENTRIES = 512
MEMO_MAX_BODY = 8 * 1024  # larger bodies are parsed every time (and bound the memo's size)


class ParseMemo:
    """An LRU of parsed requests, at most `entries` of them, each from a body of at most
    `max_body` bytes (so at most entries x max_body bytes of bodies, 4 MiB by default)."""

    def __init__(self, entries: int = MEMO_ENTRIES, max_body: int = MEMO_MAX_BODY) -> None:
        self.entries = entries
        self.max_body = max_body
        self._parsed: OrderedDict[Hashable, Generation] = OrderedDict()

    async def parse(self, route: RouteSpec, request: Request) -> Generation:
        reads: tuple[str, ...] | None = getattr(route, "memo_headers", None)
        if reads is None or self.entries <= 0:
            return await route.parse(request)
        body = await request.body()  # starlette keeps it: parse reads the same bytes
        if len(body) > self.max_body:
            return await route.parse(request)
        headers = request.headers
        scope = request.scope
        key = (
            route,
            scope["path"],
            scope.get("query_string", b""),
            body,
            tuple(headers.get(name) for name in reads),
        )
        found = self._parsed.get(key)
        if found is not None:
            self._parsed.move_to_end(key)
            return found
        generation = await route.parse(request)
        self._parsed[key] = generation
        while len(self._parsed) > self.entries:
            self._parsed.popitem(last=False)
        return generation
