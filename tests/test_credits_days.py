"""Day names of the ledger and the budget: the memoised `today` agrees with formatting
the date itself, at and around midnight UTC."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.credits import seconds_to_midnight, today


@pytest.mark.parametrize(
    "moment",
    [0.0, 86_399.999, 86_400.0, 951_782_400.0, 1_709_164_799.5, 1_796_083_200.0, -1.0],
)
def test_today_names_the_utc_date(moment: float) -> None:
    expected = dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d")
    assert today(moment) == expected


def test_today_without_a_moment_is_now_and_agrees_with_midnight() -> None:
    now = dt.datetime.now(dt.UTC)
    assert today() in {
        now.strftime("%Y-%m-%d"),
        (now + dt.timedelta(seconds=1)).strftime("%Y-%m-%d"),
    }
    moment = 1_796_083_199.0  # one second before a midnight
    assert seconds_to_midnight(moment) == pytest.approx(1.0)
    assert today(moment) != today(moment + 1.0)
