"""Appreciation math against hand-computed values."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from shared.contract.events import DayActivity, TeamSnapshot
from shared.figures import appreciation as ap

TODAY = date(2026, 11, 22)


def snapshot(days: dict[str, DayActivity]) -> TeamSnapshot:
    return TeamSnapshot(
        team_id="t", generated_at=datetime(2026, 11, 22, tzinfo=UTC), days=days, totals={}
    )


SNAP = snapshot(
    {
        "2026-11-22": DayActivity(received={"a": 2}, given={"b": 2}, cross_team=1, upward=1),
        "2026-11-16": DayActivity(received={"b": 1}, given={"x": 1}),  # 7th day back: in 7d
        "2026-11-15": DayActivity(received={"c": 1}, given={"c": 1}, downward=1),  # 8th: not
        "2026-10-25": DayActivity(received={"d": 4}),  # 29th day back: outside 28d
    }
)
MEMBERS = ["a", "b", "c", "d", "e"]


def test_window_includes_today_and_the_days_before() -> None:
    assert len(ap.window(SNAP, TODAY, 7)) == 2
    assert len(ap.window(SNAP, TODAY, 28)) == 3
    assert len(ap.window(SNAP, TODAY, 29)) == 4
    assert ap.window(None, TODAY, 7) == []


def test_coverage_counts_members_recognized_at_least_once() -> None:
    assert ap.coverage(MEMBERS, ap.window(SNAP, TODAY, 7)) == pytest.approx(2 / 5)
    assert ap.coverage(MEMBERS, ap.window(SNAP, TODAY, 28)) == pytest.approx(3 / 5)
    assert ap.coverage([], []) is None


def test_givers_ratio_ignores_people_outside_the_team() -> None:
    # "x" gave but is not a member (moved away): only "b" and "c" count.
    assert ap.givers_ratio(MEMBERS, ap.window(SNAP, TODAY, 28)) == pytest.approx(2 / 5)


def test_shares_of_received() -> None:
    w = ap.window(SNAP, TODAY, 28)  # received 2 + 1 + 1 = 4
    assert ap.share(w, "cross_team") == pytest.approx(1 / 4)
    assert ap.share(w, "upward") == pytest.approx(1 / 4)
    assert ap.share(w, "downward") == pytest.approx(1 / 4)
    assert ap.share([], "cross_team") is None


def test_gini_hand_computed() -> None:
    assert ap.gini([1, 1, 1, 1]) == 0
    # One of four gets everything: sum|xi-xj| = 2*3*4 = 24; 2 n^2 mean = 2*16*1 = 32.
    assert ap.gini([0, 0, 0, 4]) == pytest.approx(24 / 32)
    # [1, 2, 3]: sum|xi-xj| = 2*(1+2+1) = 8; 2*9*2 = 36.
    assert ap.gini([3, 1, 2]) == pytest.approx(8 / 36)
    assert ap.gini([]) is None
    assert ap.gini([0, 0]) is None


def test_received_gini_includes_members_with_none() -> None:
    # 28d: a=2, b=1, c=1, d=0, e=0 -> sorted [0,0,1,1,2], mean 0.8
    # sum|xi-xj| over ordered pairs = 2*(0+1+1+2+1+1+2+0+1+1) = 20; 2*25*0.8 = 40
    assert ap.received_gini(MEMBERS, ap.window(SNAP, TODAY, 28)) == pytest.approx(20 / 40)


def test_unrecognized_in_30_days() -> None:
    assert ap.unrecognized(MEMBERS, ap.window(SNAP, TODAY, 30)) == 1  # only "e"
    assert ap.unrecognized(MEMBERS, ap.window(SNAP, TODAY, 7)) == 3
