"""Stage four: team snapshots out, from the tables.

tables team-days and team-trust --> rapport.metrics.snapshots.v1 (key: team)

Every ``SNAPSHOT_EVERY_S``, every team whose tables changed since is published once,
however busy it was; after a rebalance, every team the worker now owns is published
again, so a snapshot lost in a crash is written again from the tables. A round that
takes long (thousands of teams, all changed while the worker catches up) is followed by
a pause ``ROUND_PAUSE`` times as long while the stages are busy: snapshots then take at
most a fifth of the worker's time, and the cost of an event does not grow with the
number of teams; once the stages are idle, the changed teams go out at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.contract import topics
from shared.contract.codec import CloudEvent, encode
from shared.contract.events import TEAM_SNAPSHOT

from . import service
from .metrics import AggregatorMetrics
from .output import Output, Sent, partitioner
from .surveys import Surveys

log = logging.getLogger(__name__)
SOURCE = "/rapport/aggregator"
SNAPSHOT_EVERY_S = 0.2
ROUND_PAUSE = 4
SNAPSHOT_SLICE = 250  # teams whose snapshots are sent before waiting for the broker
TURN_TEAMS = 25  # snapshots built between two turns of the event loop (see batches.TURN)
# Under the broker's 1 MB a record, whatever one team sends: past it, a snapshot sheds
# its oldest comments and days (the tables' records are small by construction).
MAX_SNAPSHOT_BYTES = 900 * 1024


class Snapshots:
    def __init__(
        self,
        out: Output,
        days: Mapping[str, Any],
        surveys: Surveys,
        partition_of: Callable[[str], int],
        metrics: AggregatorMetrics,
    ) -> None:
        self.out = out
        self.days = days  # the team-days table
        self.surveys = surveys
        self.partition_of = partition_of  # of a team's facts and tables
        self.snapshot_partition_of = partitioner(topics.SNAPSHOT_PARTITIONS)
        self.metrics = metrics
        self.days_by_team: dict[str, set[str]] = defaultdict(set)
        self.dirty: set[str] = set()  # teams whose snapshot is older than their tables

    def changed(self, team_id: str, day: str | None = None) -> None:
        """``team_id``'s tables changed (its ``day`` bucket, if one)."""
        if day is not None:
            self.days_by_team[team_id].add(day)
        self.dirty.add(team_id)

    async def run(self, active: Callable[[], set[int]], busy: Callable[[float], bool]) -> None:
        """Publish the teams that changed, on the ``active`` partitions, for ever; pause
        after a long round only while the stages are ``busy`` (else the last teams of a
        catch-up would wait for the pause)."""
        while True:
            started = time.monotonic()
            if self.dirty:
                await self.tick(active())
            took = time.monotonic() - started
            await asyncio.sleep(max(0.0, SNAPSHOT_EVERY_S - took))
            pause_until = time.monotonic() + ROUND_PAUSE * took
            # Polled: "no batch for a while" is not an event anything sets.
            while (left := pause_until - time.monotonic()) > 0 and busy(SNAPSHOT_EVERY_S):  # noqa: ASYNC110
                await asyncio.sleep(min(left, SNAPSHOT_EVERY_S))

    async def tick(self, active: set[int]) -> None:
        """Publish the teams that changed, on the ``active`` partitions."""
        teams = [t for t in self.dirty if self.partition_of(t) in active]
        self.dirty.clear()
        await self.publish(teams)

    def recovered(self, active: set[int]) -> int:
        """After a rebalance: read the team-days table again, and have every team on the
        ``active`` partitions published at the next tick (not before processing goes on:
        5,000 teams take seconds); how many."""
        self.days_by_team.clear()
        for key in list(self.days.keys()):
            if not service.is_chunk_key(key):
                team_id, day = service.split_key(key)
                self.days_by_team[team_id].add(day)
        teams = set(self.days_by_team) | set(self.surveys.teams())
        owned = [t for t in teams if self.partition_of(t) in active]
        self.dirty.update(owned)
        return len(owned)

    async def publish(self, teams: Iterable[str]) -> None:
        # A slice at a time: with thousands of teams, all their snapshots at once would
        # sit in the producer's buffers together (over 100 MB with 5,000 teams).
        teams = list(teams)
        for i in range(0, len(teams), SNAPSHOT_SLICE):
            sent = []
            for team_id in teams[i : i + SNAPSHOT_SLICE]:
                sent.append(self.write(team_id))
                if len(sent) % TURN_TEAMS == 0:
                    await asyncio.sleep(0)
            await asyncio.gather(*sent)

    def write(self, team_id: str) -> Sent:
        days = self.days_by_team[team_id]
        buckets = {d: self.days[service.table_key(team_id, d)] for d in days}
        now = datetime.now(UTC)
        data = service.build_snapshot(team_id, buckets, self.surveys.team_trust(team_id), now)
        ce = CloudEvent(f"{team_id}@{now.isoformat()}", SOURCE, TEAM_SNAPSHOT, now, data)
        headers, value = encode(ce)
        if len(value) > MAX_SNAPSHOT_BYTES:
            over = service.fit_snapshot(data, MAX_SNAPSHOT_BYTES)
            log.warning("snapshot of %s was %d bytes over; oldest comments/days left out",
                        team_id, over)  # fmt: skip
            self.metrics.trimmed.inc()
            headers, value = encode(ce)
        partition = self.snapshot_partition_of(team_id)  # as any producer's, by its key
        return self.out.write(topics.SNAPSHOTS, partition, team_id.encode(), value, headers)
