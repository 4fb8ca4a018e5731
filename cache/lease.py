"""A single-flight lease as an async context manager: short, renewed while its holder
works, released on the way out, whatever happens.

A lease lives `ttl` seconds (a few) and a background task renews it every `ttl / 3`, so a
holder that works for minutes (queued for the rate limit, then a slow upstream) keeps it,
while a holder that dies (`kill -9`) loses it within `ttl`: the next request for the key
proceeds within seconds instead of waiting out the whole deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from types import TracebackType

from cache.interfaces import Coordinator

log = logging.getLogger("cache.lease")


class Lease:
    def __init__(self, coordinator: Coordinator, name: str, ttl: float) -> None:
        self.coordinator = coordinator
        self.name = name
        self.ttl = ttl
        self.token = f"{os.getpid()}:{uuid.uuid4().hex}"
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._renewer is not None and not self._renewer.done()

    async def acquire(self) -> bool:
        if self.held:
            return True
        if not await self.coordinator.acquire_lease(self.name, self.token, self.ttl):
            return False
        self._renewer = asyncio.ensure_future(self._renew())
        return True

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                renewed = await self.coordinator.renew_lease(self.name, self.token, self.ttl)
            except Exception as exc:
                log.warning("could not renew lease %s (%s); trying again", self.name, exc)
                continue
            if not renewed:
                log.warning("lease %s was lost (expired before it could be renewed)", self.name)
                return

    async def release(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is None:
            return
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        try:
            await self.coordinator.release_lease(self.name, self.token)
        except Exception as exc:  # it expires by itself within ttl
            log.warning("could not release lease %s (%s); it expires by itself", self.name, exc)

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Shielded: a cancelled holder must still let go, or the key stays blocked for ttl.
        await asyncio.shield(self.release())
