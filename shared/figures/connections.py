"""Connection figures and gaming signals over trailing windows, from who recognized whom.

Each team's snapshot holds the links its members gave (``DayActivity.links``); the graph
of a window is their union over every team, so a team's figures see recognition from
anyone. Teams and managers are the directory's, members its active people, as for the
appreciation figures. Everything is a function of the events in the window (event time)
and the directory: a replay of the log gives the same figures.

Figures per team and window (ARCHITECTURE §6), over the team's active members:
- breadth: other teams whose people a member gave recognition to or received it from;
- reciprocity: of the giver -> recipient pairs with both inside the team, the share
  whose recipient recognized the giver back;
- isolated: members who neither gave nor received any recognition;
- leader connection: of the members with a manager, the share their manager recognized;
- concentration: a link is a pair of people with recognition either way, one of them a
  member; the share of the team's links that involve its most connected fifth (the
  ceil(members / 5) members with the most links; ties by id).

Gaming signals (``Thresholds``, from settings), for people to look at, never blocking:
- a trading pair: two people who each gave the other at least ``trading_min``
  recognitions, and at least ``trading_share`` of all they gave;
- a ring: three or more people, each of whom gave at least ``ring_min`` recognitions,
  all of them to one another, and each reached from every other (a closed, strongly
  connected group);
- a burst: an hour in which one giver gave at least ``burst_min`` recognitions and at
  least ``burst_factor`` times their usual rate (what they gave per active hour in the
  ``BURST_HISTORY_DAYS`` days before that day; 0 for a first-time giver).
A pair or ring counts for every team with an active member in it, a burst for the
giver's team.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import networkx as nx

from shared.contract.events import PersonFields, TeamSnapshot

BURST_HISTORY_DAYS = 28
Hour = tuple[str, str]  # (giver id, "YYYY-MM-DDTHH" in UTC)


@dataclass(frozen=True, slots=True)
class Thresholds:
    trading_min: int = 5
    trading_share: float = 0.5
    ring_min: int = 5
    burst_min: int = 10
    burst_factor: float = 5.0


@dataclass(slots=True)
class Graph:
    """Who recognized whom in a window: recognitions per giver and recipient, and per
    giver and event-time hour (those also for ``BURST_HISTORY_DAYS`` days before it)."""

    first_day: str
    out: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    into: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    hours: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))
    totals: dict[str, int] = field(default_factory=dict)  # per giver, to anyone

    def add(self, giver: str, recipient: str, n: int) -> None:
        self.out[giver][recipient] = self.out[giver].get(recipient, 0) + n
        self.into[recipient][giver] = self.into[recipient].get(giver, 0) + n
        self.totals[giver] = self.totals.get(giver, 0) + n

    def given(self, person: str) -> int:
        return self.totals.get(person, 0)

    def neighbours(self, person: str) -> set[str]:
        return set(self.out.get(person, ())) | set(self.into.get(person, ()))


def graph(snapshots: Iterable[TeamSnapshot | None], today: date, days: int) -> Graph:
    """The graph of the ``days`` days ending with ``today`` (UTC), from every snapshot."""
    first = today - timedelta(days=days - 1)
    since = (first - timedelta(days=BURST_HISTORY_DAYS)).isoformat()
    last = today.isoformat()
    g = Graph(first.isoformat())
    for snapshot in snapshots:
        if snapshot is None:
            continue
        for day, a in snapshot.days.items():
            if not since <= day <= last:
                continue
            for giver, hours in a.hours.items():
                per_hour = g.hours[giver]
                for hour, n in hours.items():
                    per_hour[f"{day}T{hour}"] = per_hour.get(f"{day}T{hour}", 0) + n
            if day >= g.first_day:
                for giver, links in a.links.items():
                    for recipient, n in links.items():
                        g.add(giver, recipient, n)
    return g


@dataclass(frozen=True, slots=True)
class Signals:
    pairs: list[frozenset[str]]
    rings: list[frozenset[str]]
    bursts: list[Hour]


def trading_pairs(g: Graph, t: Thresholds) -> list[frozenset[str]]:
    pairs = set()
    for a, links in g.out.items():
        for b, n in links.items():
            if n < t.trading_min or n < t.trading_share * g.given(a):
                continue
            back = g.out.get(b, {}).get(a, 0)
            if back >= t.trading_min and back >= t.trading_share * g.given(b):
                pairs.add(frozenset((a, b)))
    return sorted(pairs, key=sorted)


def rings(g: Graph, t: Thresholds) -> list[frozenset[str]]:
    # Givers enough, who gave only to one another: drop anyone who gave outside, again
    # until nobody does. What is left splits into strongly connected groups, and a
    # group with no recognition leaving it is a ring.
    closed = {p for p, n in g.totals.items() if n >= t.ring_min}
    leaving = [p for p in closed if not closed.issuperset(g.out[p])]
    while leaving:
        p = leaving.pop()
        if p in closed:
            closed.remove(p)
            leaving += [q for q in g.into.get(p, ()) if q in closed]  # they gave to p
    within = nx.DiGraph((a, b) for a in closed for b in g.out[a])
    groups = [frozenset(c) for c in nx.strongly_connected_components(within)]
    return sorted(
        (c for c in groups if len(c) >= 3 and all(c.issuperset(g.out[p]) for p in c)),
        key=sorted,
    )


def bursts(g: Graph, t: Thresholds) -> list[Hour]:
    found = []
    for giver, per_hour in g.hours.items():
        for hour, n in per_hour.items():
            if hour < g.first_day or n < t.burst_min:
                continue
            day = date.fromisoformat(hour[:10])
            since = (day - timedelta(days=BURST_HISTORY_DAYS)).isoformat()
            before = [m for h, m in per_hour.items() if since <= h < hour[:10]]
            usual = sum(before) / len(before) if before else 0.0
            if n >= t.burst_factor * usual:
                found.append((giver, hour))
    return sorted(found)


def signals(g: Graph, t: Thresholds) -> Signals:
    return Signals(trading_pairs(g, t), rings(g, t), bursts(g, t))


@dataclass(frozen=True, slots=True)
class TeamConnections:
    breadth: int
    reciprocity: float | None  # None: no pair inside the team
    isolated: list[str]  # member ids, sorted
    leader_connection: float | None  # None: no member has a manager
    concentration: float | None  # None: no links
    trading_pairs: int
    rings: int
    bursts: int


def team_connections(
    members: Collection[PersonFields],
    team_id: str,
    g: Graph,
    team_of: Callable[[str], str | None],
    found: Signals,
) -> TeamConnections:
    ids = {p.id for p in members}
    near = {m: g.neighbours(m) for m in ids}
    inside = [(a, b) for a in ids for b in g.out.get(a, ()) if b in ids]
    back = sum(1 for a, b in inside if a in g.out.get(b, ()))
    led = [p for p in members if p.manager_id is not None and p.manager_id != p.id]
    by_leader = sum(1 for p in led if p.id in g.out.get(p.manager_id or "", ()))
    return TeamConnections(
        breadth=_breadth(near, team_id, team_of),
        reciprocity=back / len(inside) if inside else None,
        isolated=sorted(m for m, n in near.items() if not n),
        leader_connection=by_leader / len(led) if led else None,
        concentration=_concentration(near),
        trading_pairs=sum(1 for pair in found.pairs if pair & ids),
        rings=sum(1 for ring in found.rings if ring & ids),
        bursts=sum(1 for giver, _ in found.bursts if giver in ids),
    )


def breadth(
    ids: Collection[str], team_id: str, g: Graph, team_of: Callable[[str], str | None]
) -> int:
    """Other teams whose people the people ``ids`` of ``team_id`` exchanged recognition with."""
    return _breadth({m: g.neighbours(m) for m in ids}, team_id, team_of)


def _breadth(
    near: Mapping[str, set[str]], team_id: str, team_of: Callable[[str], str | None]
) -> int:
    teams = {team_of(n) for neighbours in near.values() for n in neighbours}
    return len(teams - {team_id, None})


def _concentration(near: Mapping[str, set[str]]) -> float | None:
    links = {frozenset((m, n)) for m, neighbours in near.items() for n in neighbours}
    if not links:
        return None
    top = set(sorted(near, key=lambda m: (-len(near[m]), m))[: math.ceil(len(near) / 5)])
    return sum(1 for link in links if link & top) / len(links)
