"""What images cost: prices, the charges of upstream calls, and the daily budget.

Prices are credits per image (`[prices]` in config.toml), looked up by `route:engine`, then
the route, then each shorter prefix of it ("v2beta/stable-image/edit" covers every edit
route, "v1" every v1 route). A call is charged only when it answered 200 with images (what
it produced, images that failed our checks included: the credit was spent); refusals and
errors charge 0; a timeout after the request was sent whole is recorded as unknown. A hit
saves the price of the images it served.

The budget (`daily_credit_budget`, per UTC day, 0 = none) is checked before any call,
atomically across workers and replicas: a request reserves its price on the coordinator's
capped counter for the day and is refused (429 budget_exceeded, Retry-After until midnight
UTC) when that would pass the budget; once the call is over the reservation is corrected to
what was really charged. Hits, offline and replay never touch it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cache.interfaces import CoordinationError, Coordinator
from gateway.errors import GatewayError, RateLimited

SECONDS_PER_DAY = 86_400
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
NOT_SENT = "not_sent"  # an attempt that never reached the upstream (connection refused...)


def price_of(prices: Mapping[str, float], route: str, engine: str) -> float:
    """Credits per image for a route (a template such as "v1/text-to-image") and engine."""
    if f"{route}:{engine}" in prices:
        return prices[f"{route}:{engine}"]
    parts = route.split("/")
    for end in range(len(parts), 0, -1):
        prefix = "/".join(parts[:end])
        if prefix in prices:
            return prices[prefix]
    return 0.0


def today(now: float | None = None) -> str:
    """The UTC date of `now` (default: now), as the ledger and the budget name days."""
    return _day_name(int((time.time() if now is None else now) // SECONDS_PER_DAY))


@functools.lru_cache(maxsize=16)
def _day_name(day: int) -> str:
    # POSIX time has exactly 86,400 s per day, so a day's number names it; formatting a
    # date was ~5 us of every hit (each counts the credits it saved under today's date).
    return (EPOCH + dt.timedelta(days=day)).strftime("%Y-%m-%d")


def seconds_to_midnight(now: float | None = None) -> float:
    moment = dt.datetime.now(dt.UTC) if now is None else dt.datetime.fromtimestamp(now, dt.UTC)
    midnight = (moment + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - moment).total_seconds()


@dataclass(frozen=True)
class Attempt:
    """One upstream attempt as the ledger sees it: its status (None: no answer), and whether
    the request had been sent (a timeout after that may have been charged)."""

    status: int | None
    sent: bool = True


def attempt_charges(
    attempts: Sequence[Attempt], final_credits: float | None
) -> list[tuple[int, float | None]]:
    """(status, credits) for each attempt: the last answered 200 is charged
    `final_credits`, errors 0, attempts without an answer that were sent: unknown (None)."""
    out: list[tuple[int, float | None]] = []
    for i, attempt in enumerate(attempts):
        last = i == len(attempts) - 1
        if attempt.status is None:
            out.append((0, None if attempt.sent else 0.0))
        elif attempt.status == 200 and last:
            out.append((200, final_credits))
        else:
            out.append((attempt.status, 0.0))
    return out


class BudgetExceeded(RateLimited):
    name = "budget_exceeded"


@dataclass
class Reservation:
    name: str
    amount: float
    cap: float
    ttl: float


class Budget:
    """The daily credit budget, on the coordinator's capped counters."""

    def __init__(self, coordinator: Coordinator, daily: float, scope: str = "gateway") -> None:
        self.coordinator = coordinator
        self.daily = daily
        self.scope = scope

    def counter(self, day: str) -> str:
        return f"budget:{self.scope}:{day}"

    async def reserve(self, amount: float) -> Reservation | None:
        """Reserve `amount` of today's budget, or raise BudgetExceeded; None: no budget."""
        if self.daily <= 0 or amount <= 0:
            return None
        ttl = seconds_to_midnight() + 3600
        name = self.counter(today())
        try:
            allowed = await self.coordinator.add_within(name, amount, self.daily, ttl)
        except CoordinationError as exc:
            raise GatewayError(
                f"the credit budget cannot be checked ({exc}); not calling the upstream",
                name="coordination_unavailable",
                status=503,
            ) from exc
        if not allowed:
            spent = await self.coordinator.value(name)
            retry = max(1, math.ceil(seconds_to_midnight()))
            raise BudgetExceeded(
                f"the daily credit budget ({self.daily:g}) would be exceeded: {spent:g} spent "
                f"today (UTC), this request costs up to {amount:g}; it renews at midnight UTC",
                headers={"Retry-After": str(retry)},
            )
        return Reservation(name, amount, self.daily, ttl)

    async def settle(self, reservation: Reservation | None, charged: float | None) -> None:
        """Give back what the call did not cost (an unknown charge keeps the reservation)."""
        if reservation is None or charged is None or charged >= reservation.amount:
            return
        # If this fails the reservation stands: the budget errs on the safe side.
        with contextlib.suppress(CoordinationError):
            await self.coordinator.add_within(
                reservation.name, charged - reservation.amount, reservation.cap, reservation.ttl
            )

    async def remaining(self) -> float | None:
        if self.daily <= 0:
            return None
        try:
            return self.daily - await self.coordinator.value(self.counter(today()))
        except CoordinationError:
            return None
