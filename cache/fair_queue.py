"""The shared rate limit as a pure function of its state: a fair queue of waiting tickets
and a log of the sends that really happened.

Every backend (the cache folder's diskcache, Redis) keeps one `QueueState` and applies
these functions to it atomically (a SQLite transaction, a Redis transaction), so the rules
live in one place and are tested without any I/O:

- **A slot is spent only by a send.** The log holds the times of the last `limit` sends;
  a new send is allowed at `now` when the log holds fewer than `limit` sends in the window
  `(now - span, now]`. So no window of the upstream's arrivals ever holds more than the
  limit, and nothing reserved by a request that died (a crashed worker, a caller that hung
  up) can hold anybody back: a waiting request holds a *ticket*, which expires unless its
  holder renews it (every `heartbeat` seconds, well inside `ticket_ttl`).
- **Fair order.** Tickets are served interactive before batch; among callers of one
  priority, in turn (the caller served longest ago goes first); within one caller, first
  come first served. A ticket may send when the schedule built by giving every ticket
  ahead of it its own slot still leaves one for it now, and every ticket ahead has sent:
  when a window reopens for several at once they go one after the other, in order.
- **Cool-down.** After an upstream 429 nobody sends before `cooldown_until`.
- **Counted from when it left.** A send logged at its grant whose request was written late
  (`restamp`) is moved to when it was written, since the upstream counts arrivals.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from cache.interfaces import Priority, QueueFull, Ticket

MAX_CALLERS_REMEMBERED = 1000
# A ticket whose slot has come but with a ticket ahead still to send tries again after this.
IN_ORDER_SECONDS = 0.01
_PRIORITY_RANK: dict[str, int] = {"interactive": 0, "batch": 1}


@dataclass
class Waiting:
    caller: str
    priority: Priority
    seq: int
    expires: float
    arrived: float = 0.0  # when the request asked, stamped before any thread hop


@dataclass
class QueueState:
    sent: list[float] = field(default_factory=list)
    cooldown_until: float = 0.0
    tickets: dict[str, Waiting] = field(default_factory=dict)
    served: dict[str, float] = field(default_factory=dict)
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "cooldown_until": self.cooldown_until,
            "tickets": {
                t: [w.caller, w.priority, w.seq, w.expires, w.arrived]
                for t, w in self.tickets.items()
            },
            "served": self.served,
            "seq": self.seq,
        }

    @classmethod
    def from_dict(cls, data: Any) -> QueueState:
        if not isinstance(data, dict):
            return cls()
        return cls(
            sent=[float(t) for t in data.get("sent", [])],
            cooldown_until=float(data.get("cooldown_until", 0.0)),
            tickets={
                t: Waiting(str(v[0]), v[1], int(v[2]), float(v[3]), float(v[4]))
                for t, v in data.get("tickets", {}).items()
            },
            served={str(k): float(v) for k, v in data.get("served", {}).items()},
            seq=int(data.get("seq", 0)),
        )


@dataclass(frozen=True)
class Rules:
    limit: int
    span: float  # the period plus the margin
    max_wait: float
    ticket_ttl: float = 5.0


def fair_order(state: QueueState) -> list[str]:
    """Ticket ids in the order they are to be served."""
    by_caller: dict[str, list[tuple[float, int, str]]] = {}
    for ident, waiting in state.tickets.items():
        by_caller.setdefault(waiting.caller, []).append((waiting.arrived, waiting.seq, ident))
    keyed = []
    for caller, tickets in by_caller.items():
        tickets.sort()
        last = state.served.get(caller, float("-inf"))  # never served: first in its rank
        for rank, (_arrived, seq, ident) in enumerate(tickets):
            priority = _PRIORITY_RANK.get(state.tickets[ident].priority, 0)
            keyed.append(((priority, rank, last, seq), ident))
    keyed.sort()
    return [ident for _, ident in keyed]


def schedule(state: QueueState, now: float, rules: Rules) -> dict[str, float]:
    """When each waiting ticket could send, were every ticket ahead of it to send first."""
    times = list(state.sent)
    start = max(now, state.cooldown_until)
    slots = {}
    for ident in fair_order(state):
        slot = start
        if len(times) >= rules.limit:
            slot = max(slot, times[-rules.limit] + rules.span)
        slots[ident] = slot
        times.append(slot)
    return slots


def _expire(state: QueueState, now: float) -> None:
    for ident in [t for t, w in state.tickets.items() if w.expires <= now]:
        del state.tickets[ident]


def _send(state: QueueState, ident: str, now: float, rules: Rules) -> None:
    waiting = state.tickets.pop(ident)
    bisect.insort(state.sent, now)  # in order even after a restamp moved one later
    del state.sent[: -rules.limit]
    state.served[waiting.caller] = now
    if len(state.served) > MAX_CALLERS_REMEMBERED:
        for caller, _ in sorted(state.served.items(), key=lambda kv: kv[1])[:100]:
            del state.served[caller]


def join(
    state: QueueState,
    ident: str,
    ticket: Ticket,
    now: float,
    rules: Rules,
    arrived: float | None = None,
) -> float:
    """Queue a ticket, and send at once if its turn has come: returns 0.0 when it has sent,
    else the seconds until its estimated turn. Raises QueueFull (queueing nothing) when that
    turn is more than `max_wait` away. `arrived` orders one caller's tickets (first come,
    first served) when several join within the same instant."""
    _expire(state, now)
    state.seq += 1
    state.tickets[ident] = Waiting(
        ticket.caller,
        ticket.priority,
        state.seq,
        now + rules.ticket_ttl,
        now if arrived is None else arrived,
    )
    wait = schedule(state, now, rules)[ident] - now
    if wait > rules.max_wait:
        del state.tickets[ident]
        raise QueueFull(wait, rules.max_wait)
    return _go(state, ident, now, rules, wait)


def poll(state: QueueState, ident: str, ticket: Ticket, now: float, rules: Rules) -> float:
    """Renew a queued ticket and send if its turn has come (0.0), else the seconds until its
    estimated turn. A ticket that expired meanwhile (its holder was too slow to renew it)
    queues again, behind the others of its caller."""
    _expire(state, now)
    waiting = state.tickets.get(ident)
    if waiting is None:
        state.seq += 1
        state.tickets[ident] = Waiting(
            ticket.caller, ticket.priority, state.seq, now + rules.ticket_ttl, now
        )
    else:
        waiting.expires = now + rules.ticket_ttl
    return _go(state, ident, now, rules, schedule(state, now, rules)[ident] - now)


def _go(state: QueueState, ident: str, now: float, rules: Rules, wait: float) -> float:
    """Send if the ticket's turn has come and no ticket ahead of it is still waiting:
    tickets due at the same moment (a window reopening for several) go strictly one after
    the other, in their order, each a moment (`IN_ORDER_SECONDS`) after the one before."""
    if wait > 0:
        return wait
    if fair_order(state)[0] != ident:
        return IN_ORDER_SECONDS
    _send(state, ident, now, rules)
    return 0.0


def restamp(state: QueueState, stamp: float, late: float, rules: Rules) -> None:
    """Move the send logged at `stamp` to `stamp + late` (its request left that much after
    its grant). If it is no longer in the log (`limit` sends were logged since), the later
    time goes in anyway, in order: the log keeps the last `limit` sends by when they left."""
    if stamp in state.sent:
        state.sent.remove(stamp)
    bisect.insort(state.sent, stamp + late)
    del state.sent[: -rules.limit]


def leave(state: QueueState, ident: str) -> None:
    state.tickets.pop(ident, None)


def cool_down(state: QueueState, until: float) -> None:
    state.cooldown_until = max(state.cooldown_until, until)
