"""The shared rate limit's rules, as pure functions of the queue state (no I/O, no clock)."""

from __future__ import annotations

import pytest

from cache import fair_queue
from cache.fair_queue import QueueState, Rules
from cache.interfaces import QueueFull, Ticket
from tests.fakes.stability import count_max_in_window

RULES = Rules(limit=5, span=2.0, max_wait=100.0, ticket_ttl=5.0)


def test_sends_never_put_more_than_the_limit_in_a_window() -> None:
    state = QueueState()
    sent: list[float] = []
    now = 1000.0
    waiting = {f"t{i}": fair_queue.join(state, f"t{i}", Ticket(), now, RULES) for i in range(12)}
    sent += [now] * sum(1 for w in waiting.values() if w == 0)
    assert len(sent) == 5  # a burst goes straight out
    while state.tickets:
        now += 0.05
        for ident in list(state.tickets):
            if fair_queue.poll(state, ident, Ticket(), now, RULES) == 0:
                sent.append(now)
    assert len(sent) == 12 and count_max_in_window(sent, 2.0) == 5
    assert sent[5] == pytest.approx(1002.0, abs=0.06)


def test_a_turn_too_far_away_queues_nothing() -> None:
    state = QueueState()
    rules = Rules(limit=2, span=10.0, max_wait=5.0)
    assert fair_queue.join(state, "a", Ticket(), 0.0, rules) == 0
    assert fair_queue.join(state, "b", Ticket(), 0.0, rules) == 0
    with pytest.raises(QueueFull) as caught:
        fair_queue.join(state, "c", Ticket(), 0.0, rules)
    assert caught.value.wait == pytest.approx(10.0) and not state.tickets


def test_tickets_of_dead_requests_expire_and_hold_nobody_back() -> None:
    """60 requests queued, then their process died: none renews its ticket. Within the
    ticket's lifetime (seconds) a new request goes first; sends that really happened still
    count, so the window stays within the limit."""
    state = QueueState()
    rules = Rules(limit=20, span=10.0, max_wait=1000.0, ticket_ttl=5.0)
    for i in range(80):
        fair_queue.join(state, f"dead{i}", Ticket(), 100.0, rules)
    assert len(state.sent) == 20 and len(state.tickets) == 60
    # 10 s later the window has room again; the dead tickets expired 5 s after they joined.
    wait = fair_queue.join(state, "new", Ticket(), 110.0, rules)
    assert wait == 0 and not state.tickets
    assert fair_queue.join(state, "soon", Ticket(), 100.1 + 5.0, rules) > 0  # window full


def test_a_cool_down_holds_tickets_already_queued() -> None:
    state = QueueState()
    assert fair_queue.join(state, "a", Ticket(), 0.0, RULES) == 0
    fair_queue.cool_down(state, 30.0)
    assert fair_queue.join(state, "b", Ticket(), 1.0, RULES) == pytest.approx(29.0)
    assert fair_queue.poll(state, "b", Ticket(), 29.0, RULES) == pytest.approx(1.0)
    assert fair_queue.poll(state, "b", Ticket(), 30.0, RULES) == 0


def test_fair_order() -> None:
    state = QueueState()
    rules = Rules(limit=1, span=1.0, max_wait=1000.0)
    fair_queue.join(state, "first", Ticket("batch-job", "batch"), 0.0, rules)  # sends
    for i in range(3):
        fair_queue.join(state, f"b{i}", Ticket("batch-job", "batch"), 0.1 + i / 100, rules)
    fair_queue.join(state, "x0", Ticket("other", "batch"), 0.2, rules)
    fair_queue.join(state, "x1", Ticket("other", "batch"), 0.21, rules)
    fair_queue.join(state, "dev", Ticket("dev", "interactive"), 0.3, rules)
    # interactive first; then batch callers in turn (the one served longest ago first),
    # each caller's own requests in the order they came
    assert fair_queue.fair_order(state) == ["dev", "x0", "b0", "x1", "b1", "b2"]


def test_state_round_trips() -> None:
    state = QueueState()
    fair_queue.join(state, "a", Ticket("c", "batch"), 5.0, RULES, arrived=4.5)
    again = QueueState.from_dict(state.to_dict())
    assert again == state
    assert QueueState.from_dict(None) == QueueState()


def test_a_restamped_send_opens_the_next_window_from_when_it_left() -> None:
    """Two sends logged at 0.0; the first left 3 s late. The third send's turn is counted
    from the one that left first (0.0 + 10), the fourth's from the late one (3.0 + 10)."""
    state = QueueState()
    rules = Rules(limit=2, span=10.0, max_wait=100.0)
    assert fair_queue.join(state, "a", Ticket(), 0.0, rules) == 0
    assert fair_queue.join(state, "b", Ticket(), 0.001, rules) == 0
    fair_queue.restamp(state, 0.0, 3.0, rules)
    assert state.sent == [0.001, 3.0]
    assert fair_queue.join(state, "c", Ticket(), 0.002, rules) == pytest.approx(9.999)
    assert fair_queue.join(state, "d", Ticket(), 0.002, rules) == pytest.approx(12.998)


def test_a_restamp_of_a_send_no_longer_logged_still_counts_in_order() -> None:
    """Its stamp was pushed out by newer sends, but it left after some of them: the log
    keeps the last `limit` sends by when they left, sorted, and later sends stay sorted."""
    state = QueueState(sent=[1.0, 2.0, 3.0])
    rules = Rules(limit=3, span=10.0, max_wait=100.0)
    fair_queue.restamp(state, 0.5, 2.0, rules)  # logged at 0.5, left at 2.5
    assert state.sent == [2.0, 2.5, 3.0]
    fair_queue.restamp(state, 0.1, 0.2, rules)  # left at 0.3: older than the whole log
    assert state.sent == [2.0, 2.5, 3.0]
    state.sent = [1.0, 5.0]
    fair_queue.restamp(state, 1.0, 6.0, rules)  # now at 7.0, after a later send
    assert fair_queue.join(state, "x", Ticket(), 6.0, rules) == 0
    assert state.sent == [5.0, 6.0, 7.0]
