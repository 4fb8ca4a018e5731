"""One deadline per request, computed once and passed down.

Everything a request may wait for (another worker's identical call, the rate-limit queue,
each attempt, the backoff between attempts) spends the same budget, so no wait can buy a
second full deadline, and the 504 it ends with is written here only.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from gateway.errors import GatewayTimeout


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def error(self) -> GatewayTimeout:
        return GatewayTimeout(
            f"the upstream did not answer within the {self.seconds:g} s deadline",
            name="upstream_timeout",
        )

    @contextlib.asynccontextmanager
    async def enforced(self) -> AsyncIterator[None]:
        """Cancel what runs inside when the deadline passes, and raise its 504."""
        if self.expired:
            raise self.error()
        try:
            async with asyncio.timeout(self.remaining()):
                yield
        except TimeoutError:
            raise self.error() from None
