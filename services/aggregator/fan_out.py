"""Stage one: recognitions in, team facts out.

rapport.recognition.v1 and rapport.aggregator.events.v1 --> rapport.aggregator.team-facts.v1

Each recognition is decoded and checked, moved to its event's partition if its producer
keyed it otherwise, counted once per event (``once``), and turned into facts for the
teams of its giver and recipients; a batch's facts go in one record per partition, on
the partition of their teams. What cannot be counted goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime

from faust.types import Message
from pydantic import ValidationError

from shared.contract import topics
from shared.contract.codec import CloudEvent, CodecError, decode
from shared.contract.events import RECOGNITION_GIVEN, RecognitionGiven, event_key
from shared.infra.kafka import partition_for
from shared.readmodels.directory import Roster

from . import once, service
from .batches import TURN
from .metrics import AggregatorMetrics
from .output import Output, Sent
from .records import headers_of
from .transport import Store

# About 250 kB at the usual size of a fact; facts with many long ids are split further,
# to records under service.MAX_RECORD_BYTES.
FACTS_PER_RECORD = 2000
DLQ = topics.dlq(topics.RECOGNITION)


class FanOut:
    def __init__(
        self,
        out: Output,
        directory: Roster,
        seen: once.SeenEvents,
        seen_store: Store,
        values: frozenset[str],
        partitions: int,
        partition_of: Callable[[str], int],
        metrics: AggregatorMetrics,
    ) -> None:
        self.out = out
        self.directory = directory
        self.seen = seen
        self.seen_store = seen_store  # the event-ids table, kept by seen
        self.values = values
        self.partitions = partitions  # of the recognition topic, as of every other
        self.partition_of = partition_of  # of a team
        self.metrics = metrics
        self.expired_before = ""  # the day the events past the horizon were last forgotten

    def recovered(self, partitions: set[int]) -> None:
        """After a rebalance: the seen events of ``partitions`` (co-partitioned with the
        recognitions), and what is past the horizon forgotten at the next batch."""
        self.seen.rebuild(partitions)
        self.expired_before = ""

    async def batch(self, messages: list[Message]) -> tuple[list[Sent], int]:
        sent = []
        by_partition: dict[int, list[service.TeamFact]] = defaultdict(list)
        first_seen: dict[int, list[int]] = defaultdict(list)  # partition -> event, record
        now = datetime.now(UTC)
        for i, message in enumerate(messages, 1):
            if i % TURN == 0:
                await asyncio.sleep(0)
            try:
                ce, recognition = self.recognition_of(message)
            except (CodecError, ValidationError) as exc:
                sent.append(self.out.to_dlq(message, str(exc), DLQ))
                continue
            partition = partition_for(event_key(ce.source, ce.id).encode(), self.partitions)
            if partition != message.partition:  # another producer's key: to its partition
                headers = list(headers_of(message))
                sent.append(self.out.write(topics.EVENTS, partition, None, message.value, headers))
                continue
            event = once.event_hash(ce.source, ce.id)
            record = once.record_hash(message.value, headers_of(message))
            verdict = self.seen.verdict(partition, event, record)
            if verdict == "duplicate":  # the same event id, another record: counted once
                self.metrics.duplicates.inc()
                continue
            try:
                team_facts = await self.team_facts_of(ce, recognition, now)
            except service.Unresolvable as exc:
                sent.append(self.out.to_dlq(message, str(exc), DLQ))
                continue
            if verdict == "new":
                self.seen.add(partition, event, record)  # a second in this batch: duplicate
                first_seen[partition] += [event, record]
            for f in team_facts:
                by_partition[self.partition_of(f.team_id)].append(f)
        sent += await self.remember(first_seen, now)
        for partition, team_facts in by_partition.items():
            for i in range(0, len(team_facts), FACTS_PER_RECORD):
                for value in service.dumps_within(team_facts[i : i + FACTS_PER_RECORD]):
                    sent.append(self.out.write(topics.TEAM_FACTS, partition, None, value))
        return sent, len(messages)

    def recognition_of(self, message: Message) -> tuple[CloudEvent, RecognitionGiven]:
        """Decode one recognition; raise if it cannot be counted."""
        ce = decode(headers_of(message), message.value)
        if ce.type != RECOGNITION_GIVEN:
            raise CodecError(f"unexpected ce_type {ce.type!r}")
        recognition = RecognitionGiven.model_validate(ce.data)
        if not self.values.issuperset(recognition.values):
            raise CodecError(f"unknown value in {list(recognition.values)}")
        return ce, recognition

    async def team_facts_of(
        self, ce: CloudEvent, recognition: RecognitionGiven, now: datetime
    ) -> list[service.TeamFact]:
        lag = (now - recognition.occurred_at).total_seconds()
        self.metrics.event_time_lag.observe(max(0.0, lag))
        try:
            return service.fan_out(ce.source, ce.id, recognition, self.directory.get)
        except service.Unresolvable:
            # The person may have been added a moment ago; a worker, not a request, waits.
            await self.directory.sync(timeout_s=30)
            return service.fan_out(ce.source, ce.id, recognition, self.directory.get)

    async def remember(self, first_seen: dict[int, list[int]], now: datetime) -> list[Sent]:
        """Write the events first seen in a batch to the table's changelog, and once a
        day forget those past the horizon."""
        sent = []
        day = now.date().isoformat()
        for partition, pairs in first_seen.items():
            for key, value in self.seen.remember(partition, day, pairs):
                sent.append(self.out.changelog(self.seen_store, key, value, partition))
        if day != self.expired_before:  # a new day (or new partitions): forget the oldest
            self.expired_before = day
            for key in self.seen.expired(now.date()):  # a tombstone each
                partition = int(key.split("/")[0])
                sent.append(self.out.changelog(self.seen_store, key, None, partition))
        return sent
