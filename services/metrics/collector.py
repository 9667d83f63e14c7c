"""Prometheus collectors that compute every figure fresh on each scrape.

Labels are bounded (team, value, dimension, window). No person id, name or e-mail ever
appears, and trust figures exist only where the aggregator published k-anonymous blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.contract.events import PersonFields, TeamSnapshot
from shared.figures import appreciation as ap
from shared.figures import connections as cx
from shared.figures import privacy
from shared.figures import trust as tr
from shared.readmodels.directory import DirectoryView
from shared.readmodels.snapshots import Snapshots

log = logging.getLogger(__name__)


def _today() -> date:
    return datetime.now(UTC).date()


class SnapshotCollector(Collector):
    """Figures computed at scrape time from the directory and every team's snapshot, for
    the published teams only (``shared.figures.privacy``): any other team has no figure
    of any kind, not even its size (README, "Privacy")."""

    def __init__(
        self,
        directory: DirectoryView,
        snapshots: Snapshots,
        k: int,
        today: Callable[[], date] = _today,
    ) -> None:
        self._directory = directory
        self._snapshots = snapshots
        self._k = k
        self._today = today

    def _published(self) -> list[str]:
        return sorted(privacy.published(self._directory.sizes(), self._k))


class AppreciationCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        today = self._today()
        total = CounterMetricFamily(
            "rapport_recognitions",
            "Recognitions received by members of the team, per value tagged "
            "(one per recipient; a kudos with two values counts under both).",
            labels=["team", "value"],
        )
        members_g = GaugeMetricFamily(
            "rapport_team_active_members", "Active members of the team.", labels=["team"]
        )
        unrecognized = GaugeMetricFamily(
            "rapport_recognition_unrecognized_people",
            f"Active members with no recognition in the last {ap.UNRECOGNIZED_DAYS} days.",
            labels=["team"],
        )
        ratios = {
            name: GaugeMetricFamily(name, help_text, labels=["team", "window"])
            for name, help_text in (
                ("rapport_recognition_coverage_ratio",
                 "Share of active members recognized at least once in the window."),
                ("rapport_recognition_givers_ratio",
                 "Share of active members who gave at least one recognition in the window."),
                ("rapport_recognition_cross_team_ratio",
                 "Share of recognitions received from people in other teams."),
                ("rapport_recognition_upward_ratio",
                 "Share of recognitions received that went to the giver's manager."),
                ("rapport_recognition_downward_ratio",
                 "Share of recognitions received from the recipient's own manager."),
                ("rapport_recognition_gini_ratio",
                 "Gini coefficient of recognitions received among active members "
                 "(0 = equal, 1 = one person gets all)."),
            )
        }  # fmt: skip
        for team in self._published():
            snapshot = self._snapshots.get(team)
            members = [p.id for p in self._directory.members(team)]
            members_g.add_metric([team], len(members))
            if snapshot is not None:
                for value, n in sorted(snapshot.totals.items()):
                    total.add_metric([team, value], n)
            last30 = ap.window(snapshot, today, ap.UNRECOGNIZED_DAYS)
            unrecognized.add_metric([team], ap.unrecognized(members, last30))
            for label, days in ap.WINDOWS.items():
                w = ap.window(snapshot, today, days)
                figures = {
                    "rapport_recognition_coverage_ratio": ap.coverage(members, w),
                    "rapport_recognition_givers_ratio": ap.givers_ratio(members, w),
                    "rapport_recognition_cross_team_ratio": ap.share(w, "cross_team"),
                    "rapport_recognition_upward_ratio": ap.share(w, "upward"),
                    "rapport_recognition_downward_ratio": ap.share(w, "downward"),
                    "rapport_recognition_gini_ratio": ap.received_gini(members, w),
                }
                for name, figure in figures.items():
                    if figure is not None:
                        ratios[name].add_metric([team, label], figure)
        yield total
        yield members_g
        yield unrecognized
        yield from ratios.values()


TRUST_TEAM = [
    ("rapport_trust_index", "Trust index, 0-100: mean over dimensions of the share of "
     "favorable answers (4-5 on the 1-5 scale)."),
    ("rapport_trust_enps", "Employee Net Promoter Score, -100..100: percent of promoters "
     "(9-10) minus percent of detractors (0-6)."),
    ("rapport_trust_participation_ratio", "Respondents to the team's latest survey in the "
     "window (rounded down to a multiple of k), as a share of its active members."),
    ("rapport_trust_responses", "Survey responses behind the trust figures (whole blocks of "
     "k distinct respondents)."),
]  # fmt: skip
TRUST_DIMENSION = [
    ("rapport_trust_score", "Mean answer per dimension on the 1-5 scale."),
    ("rapport_trust_favorable_ratio", "Share of favorable answers (4-5) per dimension."),
    ("rapport_trust_perception_gap", "Leader's predicted score minus the team's mean score, "
     "per dimension, in points on the 1-5 scale (positive: the leader is more optimistic)."),
]  # fmt: skip


class TrustCollector(SnapshotCollector):
    def collect(self) -> Iterator[Metric]:
        today = self._today()
        team = {n: GaugeMetricFamily(n, h, labels=["team", "window"]) for n, h in TRUST_TEAM}
        dims = {
            n: GaugeMetricFamily(n, h, labels=["team", "dimension", "window"])
            for n, h in TRUST_DIMENSION
        }
        for team_id in self._published():
            snapshot = self._snapshots.get(team_id)
            if snapshot is None:
                continue
            members = len(self._directory.members(team_id))
            for label, days in ap.WINDOWS.items():
                f = tr.figures(snapshot.trust, tr.trailing(today, days), members)
                if f is None:
                    continue
                for name, value in (
                    ("rapport_trust_index", f.index),
                    ("rapport_trust_enps", f.enps),
                    ("rapport_trust_participation_ratio", f.participation),
                    ("rapport_trust_responses", f.responses),
                ):
                    if value is not None:
                        team[name].add_metric([team_id, label], value)
                for name, per_dim in (
                    ("rapport_trust_score", f.scores),
                    ("rapport_trust_favorable_ratio", f.favorable),
                    ("rapport_trust_perception_gap", f.gap),
                ):
                    for dim, value in sorted(per_dim.items()):
                        dims[name].add_metric([team_id, dim, label], value)
        yield from team.values()
        yield from dims.values()


CONNECTIONS_EVERY_S = 1.0
CONNECTION = [
    ("rapport_connection_breadth_teams", "Other teams whose people the team's active members "
     "gave recognition to or received it from in the window."),
    ("rapport_connection_reciprocity_ratio", "Of the giver-to-recipient pairs inside the team "
     "in the window, the share whose recipient recognized the giver back."),
    ("rapport_connection_isolated_people", "Active members who neither gave nor received any "
     "recognition in the window (their names go only to their own manager's digest)."),
    ("rapport_connection_leader_ratio", "Share of the team's active members with a manager "
     "whom that manager recognized in the window."),
    ("rapport_connection_concentration_ratio", "Share of the team's recognition links (pairs "
     "of people, one a member, with recognition either way) held by its most connected "
     "fifth of members: near 1, the team depends on a few connectors."),
    ("rapport_gaming_trading_pairs", "Pairs with a member of the team who gave each other "
     "most of what they gave in the window (a signal to look at, not a verdict)."),
    ("rapport_gaming_rings", "Closed groups of three or more, with a member of the team, "
     "who recognized only one another in the window (a signal to look at)."),
    ("rapport_gaming_bursts", "Hours in the window in which a member gave recognitions far "
     "above their usual rate (a signal to look at)."),
]  # fmt: skip


def connection_families(
    people: Sequence[PersonFields],
    snapshots: Sequence[TeamSnapshot | None],
    thresholds: cx.Thresholds,
    today: date,
    k: int,
) -> list[Metric]:
    """The connection figures and gaming signals of every published team
    (``shared.figures.privacy``), from copies of the directory's people and the latest
    snapshots (nothing shared: a thread of its own can compute them)."""
    families = {n: GaugeMetricFamily(n, h, labels=["team", "window"]) for n, h in CONNECTION}
    team_of = {p.id: p.team_id for p in people}
    members: dict[str, list[PersonFields]] = defaultdict(list)
    for p in sorted(people, key=lambda p: p.id):
        if p.active:
            members[p.team_id].append(p)
    shown = privacy.published({team: len(m) for team, m in members.items()}, k)
    for label, days in ap.WINDOWS.items():
        g = cx.graph(snapshots, today, days)
        found = cx.signals(g, thresholds)
        for team in sorted(shown):
            f = cx.team_connections(members[team], team, g, team_of.get, found)
            for name, value in (
                ("rapport_connection_breadth_teams", f.breadth),
                ("rapport_connection_reciprocity_ratio", f.reciprocity),
                ("rapport_connection_isolated_people", len(f.isolated)),
                ("rapport_connection_leader_ratio", f.leader_connection),
                ("rapport_connection_concentration_ratio", f.concentration),
                ("rapport_gaming_trading_pairs", f.trading_pairs),
                ("rapport_gaming_rings", f.rings),
                ("rapport_gaming_bursts", f.bursts),
            ):
                if value is not None:
                    families[name].add_metric([team, label], value)
    return list(families.values())


class ConnectionCollector(SnapshotCollector):
    """Serves the connection figures last computed by :meth:`run`, which computes them
    again and again in a thread: over 100,000 people they take seconds, and a scrape (with
    every other figure in it) must not wait for them."""

    def __init__(
        self,
        directory: DirectoryView,
        snapshots: Snapshots,
        thresholds: cx.Thresholds,
        k: int,
        today: Callable[[], date] = _today,
    ) -> None:
        super().__init__(directory, snapshots, k, today)
        self._thresholds = thresholds
        self._families = connection_families([], [], thresholds, today(), k)  # none yet
        self._seconds = 0.0

    def collect(self) -> Iterator[Metric]:
        yield from self._families
        yield GaugeMetricFamily(
            "rapport_connection_compute_seconds",
            "Seconds the connection figures last took to compute; they are computed again "
            f"every {CONNECTIONS_EVERY_S:.0f} s, or twice that long if longer.",
            value=self._seconds,
        )

    async def run(self) -> None:
        """Compute the figures again, for ever."""
        while True:
            started = time.monotonic()
            people = self._directory.people()
            every = [self._snapshots.get(t) for t in self._snapshots.teams()]
            try:
                self._families = await asyncio.to_thread(
                    connection_families, people, every, self._thresholds, self._today(), self._k
                )
            except Exception:  # the figures stay as they were; the next round tries again
                log.exception("computing the connection figures failed")
            self._seconds = time.monotonic() - started
            await asyncio.sleep(max(CONNECTIONS_EVERY_S, 2 * self._seconds))
