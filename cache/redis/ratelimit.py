"""The shared rate limit in Redis: the fair queue of `cache.fair_queue`, applied to one
state in Redis by optimistic transactions, on Redis's own clock.

Each change reads the state and Redis's `TIME` in one round trip, applies the same pure
functions the local backend applies (`join`, `poll`, `leave`, `cool_down`), and writes the
result back with a Lua compare-and-set on the state's version: if another replica changed
the state in between, nothing is written and the change is made again on the new state
(`retries` counts those conflicts; the bench reports them). So the rules stay one set,
tested once without I/O, and every committed change is atomic.

Why the clock is Redis's: a change commits only if nothing committed since it read, so
every committed change read `TIME` after the one before it committed: the log of sends is
in Redis's time, in order, whatever the replicas' own clocks say, and no window of it
can hold more than the limit. The margin (as on the local backend) absorbs the moments
between a send being logged and its request reaching the upstream.

Fails closed: when Redis cannot be reached, `acquire` raises CoordinationError (the
fetch path answers 503 coordination_unavailable), never an uncounted send.
"""

from __future__ import annotations

import json
from typing import Any

from cache.fair_queue import QueueState
from cache.queued_limiter import HEARTBEAT_SECONDS, TICKET_TTL_SECONDS, QueuedLimiter, Step
from cache.redis.connection import RedisConnection

# Write the new state only if its version is still the one read.
COMPARE_AND_SET = """
if (redis.call('HGET', KEYS[1], 'v') or '0') == ARGV[1] then
    redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
    return 1
end
return 0
"""


class RedisRateLimiter(QueuedLimiter):
    def __init__(
        self,
        connection: RedisConnection,
        *,
        limit: int,
        period: float,
        margin: float = 0.0,
        max_wait: float = 60.0,
        heartbeat: float = HEARTBEAT_SECONDS,
        ticket_ttl: float = TICKET_TTL_SECONDS,
    ) -> None:
        super().__init__(limit=limit, period=period, margin=margin, max_wait=max_wait,
                         heartbeat=heartbeat, ticket_ttl=ticket_ttl)  # fmt: skip
        self.connection = connection
        self.client = connection.client
        self.key = connection.key("ratelimit", "queue")
        self.transactions = 0  # committed changes, by this process
        self.retries = 0  # changes made again because another replica committed first
        self._cas = self.client.register_script(COMPARE_AND_SET)

    async def _read(self) -> tuple[str, QueueState, float]:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(self.key, "v", "s")
            pipe.time()
            (version, raw), (seconds, micros) = await pipe.execute()
        state = QueueState.from_dict(json.loads(raw) if raw else None)
        return _text(version) if version else "0", state, seconds + micros / 1e6

    async def _apply(self, step: Step) -> Any:
        """Read the state and Redis's TIME, apply the step, write it back only if nobody
        else did meanwhile (else again)."""
        with self.connection.coordination_errors():
            while True:
                version, state, now = await self._read()
                result = step(state, now)
                written = await self._cas(
                    keys=[self.key],
                    args=[version, str(int(version) + 1), json.dumps(state.to_dict())],
                )
                if written:
                    self.transactions += 1
                    return result
                self.retries += 1

    async def snapshot(self) -> QueueState:
        with self.connection.coordination_errors():
            _, state, _ = await self._read()
        return state


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
