"""What a manager's weekly digest says, computed from the directory and team snapshots.

Team figures are for the one team the manager leads, and only where that team's figures
are published at all (``shared.figures.privacy``: at least k active members, and not
hidden to protect a smaller team); people are named only when they report to the
manager. Trust figures come from k-anonymous blocks (``shared.figures.trust``), so a team
with fewer than k respondents shows none.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from shared.contract.events import Contact, DirectoryEntry, TeamSnapshot
from shared.figures import appreciation as ap
from shared.figures import connections as cx
from shared.figures import privacy
from shared.figures import trust as tr
from shared.readmodels.directory import DirectoryView
from shared.readmodels.questions import Catalogue

from .actions import names, suggest

UNRECOGNIZED_DAYS = 14
TREND_WEEKS = 8
TRUST_DAYS = 28
CONNECTION_DAYS = 28


class NotAManager(LookupError):
    """The person has no active reports, or is unknown (or erased: no one to send to)."""


@dataclass(frozen=True, slots=True)
class Named:
    """A person as a digest names them: ``directory.ERASED`` once they are erased."""

    id: str
    name: str


def named(people: list[DirectoryEntry], directory: DirectoryView) -> list[Named]:
    """``people`` by name, named as the directory can."""
    return sorted((Named(p.id, directory.name(p)) for p in people), key=lambda p: (p.name, p.id))


@dataclass(frozen=True, slots=True)
class DimensionRow:
    dimension: str
    score: float
    favorable: float
    change: float | None  # favorable share minus the one a week earlier
    gap: float | None  # leader's predicted score minus the team's


@dataclass(frozen=True, slots=True)
class TrustPart:
    index: float
    change: float | None  # index points against the 28 days to a week earlier
    dimensions: list[DimensionRow]
    participation: float | None
    enps: float | None
    responses: int


@dataclass(frozen=True, slots=True)
class ConnectionsPart:
    """Over the 28 days to the week's end (``shared.figures.connections``)."""

    isolated: list[Named]  # the manager's reports who neither gave nor received any
    not_recognized: list[Named]  # the manager's reports the manager did not recognize
    action: str


@dataclass(frozen=True, slots=True)
class WeekPoint:
    week: str
    received: int
    trust_index: float | None


@dataclass(frozen=True, slots=True)
class TeamFigures:
    """What the digest says about the team as a whole."""

    received: int
    given: int
    top_values: list[tuple[str, int]]
    coverage: float | None
    coverage_before: float | None
    cross_team: float | None
    breadth: int  # other teams the team exchanged recognition with, last 28 days
    breadth_before: int  # the same, 28 days to a week earlier
    trust: TrustPart | None
    trend: list[WeekPoint]


@dataclass(frozen=True, slots=True)
class Digest:
    manager: Named
    to: Contact  # the manager's
    team_id: str
    week: str
    first_day: date
    last_day: date
    members: int  # active members of the team now
    figures: TeamFigures | None  # None: the team's figures are not published
    unrecognized: list[Named]
    connections: ConnectionsPart
    actions: list[str]

    @property
    def named(self) -> tuple[str, ...]:
        """Everyone the digest names: its manager, and the reports it lists."""
        lists = (self.unrecognized, self.connections.isolated, self.connections.not_recognized)
        return tuple(sorted({self.manager.id, *(p.id for people in lists for p in people)}))


def week_label(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def parse_week(week: str) -> date:
    """The Monday of an ISO week ``YYYY-Www``; ``ValueError`` if it is not one."""
    try:
        year, number = week.split("-W")
        if len(year) != 4 or len(number) != 2:
            raise ValueError
        return date.fromisocalendar(int(year), int(number), 1)
    except ValueError:
        raise ValueError(f"week {week!r} is not an ISO week like 2026-W47") from None


def _trust(
    snapshot: TeamSnapshot | None, last_day: date, members: int, order: tuple[str, ...]
) -> TrustPart | None:
    if snapshot is None:
        return None
    now = tr.figures(snapshot.trust, tr.trailing(last_day, TRUST_DAYS), members)
    if now is None:
        return None
    before = tr.figures(
        snapshot.trust, tr.trailing(last_day - timedelta(days=7), TRUST_DAYS), members
    )
    rows = [
        DimensionRow(
            dimension=d,
            score=now.scores[d],
            favorable=now.favorable[d],
            change=now.favorable[d] - before.favorable[d] if before and d in before.favorable
            else None,
            gap=now.gap.get(d),
        )
        for d in order
        if d in now.scores
    ]  # fmt: skip
    return TrustPart(
        index=now.index,
        change=now.index - before.index if before else None,
        dimensions=rows,
        participation=now.participation,
        enps=now.enps,
        responses=now.responses,
    )


def _connections(
    manager: DirectoryEntry,
    directory: DirectoryView,
    graph_of: Callable[[date, int], cx.Graph],
    last_day: date,
    breadth: tuple[int, int] | None,
) -> ConnectionsPart:
    now = graph_of(last_day, CONNECTION_DAYS)
    reports = named(directory.reports(manager.id), directory)
    isolated = [p for p in reports if not now.neighbours(p.id)]
    not_recognized = [p for p in reports if p.id not in now.out.get(manager.id, {})]
    if isolated:
        action = (
            f"Check in with {names(isolated)}: nobody recognized them, and they recognized "
            "nobody, in four weeks. Pair them with a colleague on their next piece of work."
        )
    elif not_recognized:
        action = f"Recognize {names(not_recognized)}: you have not in four weeks."
    elif breadth is not None and breadth[0] <= breadth[1]:
        action = (
            "Invite someone from another team to your next review or demo: connections "
            "across teams are what silos lack."
        )
    else:
        action = "Ask your team who outside it helped them most this month, and thank them."
    return ConnectionsPart(isolated, not_recognized, action)


def _breadth(
    team_id: str,
    directory: DirectoryView,
    graph_of: Callable[[date, int], cx.Graph],
    last_day: date,
) -> tuple[int, int]:
    """Other teams exchanged with in the 28 days to ``last_day``, and to a week before."""
    members = [p.id for p in directory.members(team_id)]
    now, before = (graph_of(d, CONNECTION_DAYS) for d in (last_day, last_day - timedelta(7)))
    return (cx.breadth(members, team_id, now, directory.team_of),
            cx.breadth(members, team_id, before, directory.team_of))  # fmt: skip


def build(
    manager_id: str,
    week: str,
    directory: DirectoryView,
    snapshot_of: Callable[[str], TeamSnapshot | None],
    graph_of: Callable[[date, int], cx.Graph],
    questions: Catalogue,
    k: int,
) -> Digest:
    """The digest of ``manager_id`` about ISO week ``week``; ``graph_of(last_day, days)``
    is who recognized whom in a window (``shared.figures.connections.graph``)."""
    manager = directory.get(manager_id)
    if manager is None or not manager.active:
        raise NotAManager(f"unknown or inactive person {manager_id!r}")
    to = directory.contact(manager)
    if to is None:
        raise NotAManager(f"{manager_id!r} was erased: there is no one to send to")
    try:
        team_id = directory.led_team(manager)
    except ValueError as exc:
        raise NotAManager(str(exc)) from None
    first_day = parse_week(week)
    last_day = first_day + timedelta(days=6)
    unrecognized = named([
        p
        for p in directory.reports(manager.id)
        if not ap.received_by(ap.window(snapshot_of(p.team_id), last_day, UNRECOGNIZED_DAYS))
        .get(p.id)
    ], directory)  # fmt: skip
    figures = None
    if team_id in privacy.published(directory.sizes(), k):
        figures = _figures(team_id, directory, snapshot_of(team_id), graph_of, last_day, questions)
    trust, coverage = (figures.trust, figures.coverage) if figures else (None, None)
    return Digest(
        manager=Named(manager.id, to.name),
        to=to,
        team_id=team_id,
        week=week,
        first_day=first_day,
        last_day=last_day,
        members=len(directory.members(team_id)),
        figures=figures,
        unrecognized=unrecognized,
        connections=_connections(manager, directory, graph_of, last_day,
                                 (figures.breadth, figures.breadth_before) if figures else None),
        actions=suggest(trust, unrecognized, coverage),
    )  # fmt: skip


def _figures(
    team_id: str,
    directory: DirectoryView,
    snapshot: TeamSnapshot | None,
    graph_of: Callable[[date, int], cx.Graph],
    last_day: date,
    questions: Catalogue,
) -> TeamFigures:
    members = [p.id for p in directory.members(team_id)]
    days = ap.window(snapshot, last_day, 7)
    values: Counter[str] = Counter()
    for a in days:
        values.update(a.values)
    trend = []
    for n in range(TREND_WEEKS - 1, -1, -1):
        end = last_day - timedelta(weeks=n)
        t = (
            tr.figures(snapshot.trust, tr.trailing(end, TRUST_DAYS), len(members))
            if snapshot
            else None
        )
        received = sum(a.received_count for a in ap.window(snapshot, end, 7))
        trend.append(WeekPoint(week_label(end), received, t.index if t else None))
    breadth, breadth_before = _breadth(team_id, directory, graph_of, last_day)
    return TeamFigures(
        received=sum(a.received_count for a in days),
        given=sum(a.given_count for a in days),
        top_values=values.most_common(3),
        coverage=ap.coverage(members, days),
        coverage_before=ap.coverage(members, ap.window(snapshot, last_day - timedelta(7), 7)),
        cross_team=ap.share(days, "cross_team"),
        breadth=breadth,
        breadth_before=breadth_before,
        trust=_trust(snapshot, last_day, len(members), questions.dimensions),
        trend=trend,
    )
