"""Connection figures and gaming signals against values computed by hand on a small graph.

The snapshots are built the aggregator's way (fan-out, buckets, snapshot), so the test
covers what the buckets keep as well as the arithmetic.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

import pytest

from services.aggregator import service
from services.metrics.collector import connection_families
from services.metrics.settings import MetricsSettings
from shared.contract.events import RecognitionGiven, TeamSnapshot, TeamTrust
from shared.figures import connections as cx
from tests.support.people import person

TODAY = date(2026, 11, 22)
T = cx.Thresholds()  # the defaults: trading 5 and half, ring 5, burst 10 and 5x


PEOPLE = {
    p.id: p
    for p in [
        person("boss", "exec"),
        person("c1", "core", "boss"),
        *[person(f"c{i}", "core", "c1") for i in range(2, 7)],
        person("e1", "edge"),
        *[person(f"e{i}", "edge", "e1") for i in (2, 3)],
        *[person(f"o{i}", "ops") for i in (1, 2)],
        *[person(f"f{i}", "far") for i in range(1, 8)],
        *[person(f"r{i}", "ring") for i in range(1, 5)],
        *[person(f"t{i}", "trio") for i in range(1, 4)],
        *[person(f"b{i}", "burst") for i in range(1, 4)],
    ]
}
FAR = [f"f{i}" for i in range(1, 8)]


def at(days_ago: int, hour: int = 12) -> datetime:
    return datetime.combine(TODAY - timedelta(days=days_ago), time(hour), UTC)


def kudos(giver: str, to: list[str], when: datetime, times: int = 1) -> list[RecognitionGiven]:
    return [
        RecognitionGiven(
            giver_id=giver,
            recipient_ids=tuple(to),
            message="thanks",
            values=("growth",),
            occurred_at=when,
        )
        for _ in range(times)
    ]


GRAPH = [
    # core: its leader c1 recognized c2 and c3; c2 thanked c1 back, and c3; c5, c6: nobody.
    *kudos("c1", ["c2", "c3"], at(1)),
    *kudos("c2", ["c1"], at(2)),
    *kudos("c2", ["c3"], at(3)),
    *kudos("o1", ["c2"], at(0)),  # ops -> core, today
    *kudos("c3", ["e2"], at(10)),  # core -> edge, only in 28 days
    *kudos("e1", ["c4"], at(10)),  # edge -> core, only in 28 days
    # Trading: o1 and o2 give each other nearly everything they give.
    *kudos("o1", ["o2"], at(4), times=6),
    *kudos("o2", ["o1"], at(5), times=6),
    # The look-alike: a close pair who also thank seven others each.
    *kudos("e2", ["e3"], at(4), times=6),
    *kudos("e3", ["e2"], at(5), times=6),
    *kudos("e2", FAR, at(6)),
    *kudos("e3", FAR, at(6)),
    # A ring of three who only thank one another (r4 is on their team, and isolated).
    *kudos("r1", ["r2"], at(3), times=5),
    *kudos("r2", ["r3"], at(3), times=5),
    *kudos("r3", ["r1"], at(3), times=5),
    # The look-alike: the same loop, but t1 thanks someone else too.
    *kudos("t1", ["t2"], at(3), times=5),
    *kudos("t2", ["t3"], at(3), times=5),
    *kudos("t3", ["t1"], at(3), times=5),
    *kudos("t1", ["f1"], at(3)),
    # A burst: b1's twelve in one hour, never having given before.
    *kudos("b1", ["f2"], at(0, hour=9), times=12),
    # Look-alikes: b2 gives twelve in an hour every week (their usual), b3 nine at once.
    *[k for week in range(8) for k in kudos("b2", ["f3"], at(7 * week, hour=16), times=12)],
    *kudos("b3", ["f4"], at(0, hour=9), times=9),
]


def snapshots(
    recognitions: list[RecognitionGiven], deliveries: int = 1, shuffle: int | None = None
) -> list[TeamSnapshot]:
    """The teams' snapshots after every fact arrived ``deliveries`` times, in the order of
    ``recognitions`` or shuffled with seed ``shuffle``."""
    buckets: dict[str, dict[str, service.Bucket]] = defaultdict(dict)
    seen: dict[str, set[int]] = defaultdict(set)
    arriving = [
        f
        for n, r in enumerate(recognitions)
        for f in service.loads(service.dumps(service.fan_out("/test", f"k{n}", r, PEOPLE.get)))
    ] * deliveries  # through JSON, as the stages pass them
    if shuffle is not None:
        random.Random(shuffle).shuffle(arriving)
    for f in arriving:
        key = service.table_key(f.team_id, f.day)
        if (bucket := service.apply(buckets[f.team_id].get(f.day), [f], seen[key])) is not None:
            buckets[f.team_id][f.day] = bucket
    now = datetime.combine(TODAY, time(23), UTC)
    return [
        TeamSnapshot.model_validate(service.build_snapshot(team, days, TeamTrust(), now))
        for team, days in buckets.items()
    ]


SNAPSHOTS = snapshots(GRAPH)


def figures(team: str, days: int) -> cx.TeamConnections:
    g = cx.graph(SNAPSHOTS, TODAY, days)
    members = [p for p in PEOPLE.values() if p.team_id == team]
    team_of = lambda pid: p.team_id if (p := PEOPLE.get(pid)) else None  # noqa: E731
    return cx.team_connections(members, team, g, team_of, cx.signals(g, T))


def test_team_figures_match_hand_computed_values() -> None:
    core = figures("core", 28)
    assert core.breadth == 2  # edge (c3 -> e2, e1 -> c4) and ops (o1 -> c2)
    # Pairs inside: c1->c2, c1->c3, c2->c1, c2->c3; the first and third go both ways.
    assert core.reciprocity == pytest.approx(2 / 4)
    assert core.isolated == ["c5", "c6"]
    # Six members with a manager (c1's is boss); c1 recognized c2 and c3; boss nobody.
    assert core.leader_connection == pytest.approx(2 / 6)
    # Links: c1c2 c1c3 c2c3 c3e2 c4e1 c2o1. Most connected fifth: ceil(6/5) = 2 members,
    # c2 and c3 (three links each); five of the six links involve one of them.
    assert core.concentration == pytest.approx(5 / 6)
    assert (core.trading_pairs, core.rings, core.bursts) == (0, 0, 0)


def test_a_shorter_window_sees_only_its_days() -> None:
    core = figures("core", 7)
    assert core.breadth == 1  # ops only: the edge links are ten days old
    assert core.isolated == ["c4", "c5", "c6"]
    # Links: c1c2 c1c3 c2c3 c2o1; top two c2 (3), c1 and c3 (2): c1 by id.
    assert core.concentration == pytest.approx(4 / 4)
    assert figures("core", 1).reciprocity is None  # no pair inside the team today


def test_only_the_patterns_are_flagged_not_their_look_alikes() -> None:
    g = cx.graph(SNAPSHOTS, TODAY, 28)
    found = cx.signals(g, T)
    assert found.pairs == [frozenset({"o1", "o2"})]  # not e2 and e3: they give broadly
    assert found.rings == [frozenset({"r1", "r2", "r3"})]  # not the t loop: t1 gives out
    # b1's first hour, not b2's weekly twelve (its usual) nor b3's nine.
    assert found.bursts == [("b1", f"{TODAY.isoformat()}T09")]
    ops, ring, burst, edge = (figures(t, 28) for t in ("ops", "ring", "burst", "edge"))
    assert (ops.trading_pairs, ring.rings, burst.bursts) == (1, 1, 1)
    assert (edge.trading_pairs, edge.rings, edge.bursts) == (0, 0, 0)
    assert ring.isolated == ["r4"]
    # A pair counts for each team with a member in it.
    assert figures("core", 28).trading_pairs == 0


def test_thresholds_decide() -> None:
    g = cx.graph(SNAPSHOTS, TODAY, 28)
    strict = cx.Thresholds(trading_min=7, ring_min=6, burst_min=13)
    assert cx.signals(g, strict) == cx.Signals([], [], [])
    loose = cx.Thresholds(trading_share=0.4, burst_min=9)
    found = cx.signals(g, loose)
    assert frozenset({"e2", "e3"}) in found.pairs  # 6 of 13 is over 0.4
    assert ("b3", f"{TODAY.isoformat()}T09") in found.bursts


def test_redelivered_or_reordered_facts_leave_the_links_as_they_were() -> None:
    by_team = {s.team_id: s.days for s in SNAPSHOTS}
    for seed in (1, 2):  # a replay of the log, with redeliveries, in another order
        again = snapshots(GRAPH, deliveries=3, shuffle=seed)
        assert {s.team_id: s.days for s in again} == by_team
    core = {d: a.links for d, a in by_team["core"].items()}
    assert core[(TODAY - timedelta(days=1)).isoformat()] == {"c1": {"c2": 1, "c3": 1}}
    ops = by_team["ops"][(TODAY - timedelta(days=4)).isoformat()]
    assert ops.links == {"o1": {"o2": 6}} and ops.hours == {"o1": {"12": 6}}


def test_thresholds_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MetricsSettings().thresholds == cx.Thresholds()  # the same defaults in both
    for name, value in {"TRADING_MIN": "7", "TRADING_SHARE": "0.6", "RING_MIN": "4",
                        "BURST_MIN": "20", "BURST_FACTOR": "3"}.items():  # fmt: skip
        monkeypatch.setenv(f"RAPPORT_{name}", value)
    assert MetricsSettings().thresholds == cx.Thresholds(7, 0.6, 4, 20, 3.0)
    monkeypatch.setenv("RAPPORT_TRADING_SHARE", "0")
    with pytest.raises(ValueError, match="trading_share"):
        MetricsSettings()


def test_the_metrics_service_exports_each_figure_per_team_and_window() -> None:
    families = connection_families(list(PEOPLE.values()), SNAPSHOTS, T, TODAY, k=1)
    samples = {(s.name, s.labels["team"], s.labels["window"]): s.value
               for f in families for s in f.samples}  # fmt: skip
    assert samples[("rapport_connection_breadth_teams", "core", "28d")] == 2
    assert samples[("rapport_connection_breadth_teams", "core", "7d")] == 1
    assert samples[("rapport_connection_isolated_people", "ring", "28d")] == 1
    assert samples[("rapport_connection_concentration_ratio", "core", "28d")] == 5 / 6
    assert samples[("rapport_gaming_trading_pairs", "ops", "28d")] == 1
    assert samples[("rapport_gaming_rings", "ring", "7d")] == 1
    assert samples[("rapport_gaming_bursts", "burst", "7d")] == 1
    assert ("rapport_connection_reciprocity_ratio", "exec", "28d") not in samples  # no pair
    assert {team for _, team, _ in samples} == {p.team_id for p in PEOPLE.values()}


def test_a_team_of_fewer_than_k_active_members_has_no_connection_figure() -> None:
    """A team of two that trades kudos would show one trading pair: those two."""
    families = connection_families(list(PEOPLE.values()), SNAPSHOTS, T, TODAY, k=5)
    shown = {s.labels["team"] for f in families for s in f.samples}
    assert shown == {"core", "far"}  # six and seven people; every other team has 1 to 4
