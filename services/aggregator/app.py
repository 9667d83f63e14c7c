"""The faust app: three stages move records between topics and the team tables.

rapport.recognition.v1 --fan_out--> rapport.aggregator.team-facts.v1
    (a batch's facts in one record per partition, on the partition of their teams)
rapport.feedback.survey.v1 --forward--> team-facts (the event as is, re-keyed by team;
    a round's close marker to the same partition number)
team-facts --aggregate--> tables team-days (key: team/day, and team/day#n for sealed fact
                       ids), team-trust (keys: see surveys.py)
snapshot timer --> rapport.metrics.snapshots.v1 (key: team), for the teams that changed
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import tempfile
from collections import OrderedDict, defaultdict, deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.types import Message
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from shared import topics
from shared.codec import DLQ_REASON, CloudEvent, CodecError, decode, encode
from shared.directory import Roster
from shared.events import (
    RECOGNITION_GIVEN,
    ROUND_CLOSED,
    SELF_ASSESSMENT,
    SURVEY_RESPONSE,
    TEAM_SNAPSHOT,
    RecognitionGiven,
    RoundClosed,
    SelfAssessed,
    SurveyResponded,
    event_key,
)
from shared.questions import catalogue
from shared.settings import Settings

from . import once, service, transport
from .metrics import AggregatorMetrics
from .surveys import Surveys

log = logging.getLogger(__name__)
SOURCE = "/rapport/aggregator"
SEEN_CACHE_BUCKETS = 4096
SNAPSHOT_EVERY_S = 0.2
SNAPSHOT_SLICE = 250  # teams whose snapshots are sent before waiting for the broker
FETCH_RECORDS = 2000  # at most per fetch, so per batch
FACTS_PER_RECORD = 2000  # about 250 kB, well under the broker's 1 MB a record
IN_FLIGHT = 2  # batches of a stage processed, not yet acknowledged by the broker
# Under the broker's 1 MB a record, whatever one team sends: past it, a snapshot sheds
# its oldest comments and days (the tables' records are small by construction).
MAX_SNAPSHOT_BYTES = 900 * 1024
INPUTS = (topics.RECOGNITION, topics.EVENTS, topics.SURVEY, topics.TEAM_FACTS)


class Gate:
    """Keeps batches and rebalances apart.

    On a rebalance, faust re-reads every table from its changelog and seeks the streams
    back to their committed offsets; it does not wait for batches. A batch still
    writing then would be applied to state the re-read replaces, and its offsets
    committed without its effect. So the revocation waits for the batches in flight
    (from their start until the broker has acknowledged their output), and no batch
    starts until the tables are recovered.
    """

    def __init__(self) -> None:
        self._count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    async def enter(self) -> None:
        await self._open.wait()
        self._count += 1
        self._idle.clear()

    def leave(self) -> None:
        self._count -= 1
        if not self._count:
            self._idle.set()

    async def close(self) -> None:
        self._open.clear()
        await self._idle.wait()

    def open(self) -> None:
        self._open.set()


async def in_batches(
    app: faust.App,
    lane: asyncio.Queue[list[Message]],
    process: Callable[[list[Message]], Awaitable[tuple[list[Awaitable[Any]], int]]],
    stage: str,
    metrics: AggregatorMetrics,
    gate: Gate,
) -> None:
    """Feed the messages of ``lane`` to ``process`` a batch at a time; ack a batch only
    once it is done.

    ``process`` returns the sends it made and how many items it handled (a record of
    team facts holds many); the batch is done when the broker has acknowledged all of
    them, so an offset is never committed for output that a crash could still lose
    (faust's own flush before a commit gives up after 0.1 s). The next batch is
    processed meanwhile (up to ``IN_FLIGHT`` batches, acked in order). A worker that
    cannot finish a batch (an error, or a stop in the middle) exits on the spot, before
    its offsets are acked, and the batch is delivered again to whoever takes over.
    """
    consumer = app.consumer
    in_flight: deque[asyncio.Task[None]] = deque()
    last: asyncio.Task[None] | None = None

    async def finish(
        before: asyncio.Task[None] | None,
        messages: list[Message],
        sent: list[Awaitable[Any]],
        handled: int,
    ) -> None:
        with exit_unless_done():
            await asyncio.gather(*sent)
            if before is not None:
                # Acked in batch order: faust would commit a later batch's offsets
                # past an earlier batch still waiting for the broker.
                await before
        gate.leave()
        for message in messages:
            consumer.ack(message)
        metrics.events.labels(stage).inc(handled)
        ends = {m.tp: m.offset for m in messages}
        lag = sum(max(0, consumer.highwater(tp) - offset - 1) for tp, offset in ends.items())
        metrics.consumer_lag.labels(stage).set(lag)

    while True:
        messages = await lane.get()
        await gate.enter()
        with exit_unless_done():
            # Taken before a rebalance: skip what is now another worker's.
            assigned = consumer.assignment()
            taken = len(messages)
            messages = [m for m in messages if m.tp in assigned]
            if len(messages) < taken:
                log.info(
                    "%s: skipped %d records of revoked partitions", stage, taken - len(messages)
                )
            sent, handled = await process(messages)
        last = asyncio.create_task(finish(last, messages, sent, handled))
        in_flight.append(last)
        while in_flight and (len(in_flight) >= IN_FLIGHT or in_flight[0].done()):
            await in_flight.popleft()


@contextlib.contextmanager
def exit_unless_done() -> Iterator[None]:
    """Exit the worker, before anything is acked, if the block does not finish."""
    try:
        yield
    except asyncio.CancelledError:
        log.warning("stopped in the middle of a batch; it will be processed again")
        os._exit(transport.EXIT_CUT_SHORT)
    except Exception:
        log.exception("a batch failed; exiting so that it is processed again")
        os._exit(1)


Feedback = SurveyResponded | SelfAssessed | RoundClosed


def headers_of(message: Message) -> Sequence[tuple[str, bytes]]:
    """A record's headers, as aiokafka reads them (faust types them more loosely)."""
    return cast(Sequence[tuple[str, bytes]], message.headers or ())


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> faust.App:
    """Build the faust app with its topics, tables and stages (metrics in ``registry``)."""
    n = settings.topic_partitions
    app = faust.App(
        topics.AGGREGATOR_APP_ID,
        broker=[f"kafka://{s}" for s in settings.bootstrap_servers.split(",")],
        store="memory://",  # state is rebuilt from the changelog, never kept on disk
        datadir=tempfile.mkdtemp(prefix="rapport-aggregator-"),
        topic_partitions=n,
        topic_replication_factor=settings.topic_replication_factor,
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(settings.session_timeout / 6, 0.5),
        broker_rebalance_timeout=settings.session_timeout * 2,
        producer_acks=-1,
        web_enabled=False,
        stream_wait_empty=False,
        broker_max_poll_records=FETCH_RECORDS,
        producer_linger=0.005,  # a batch's sends go out in a few produce requests
    )
    # The input topics, each read a fetch at a time (see transport.Consumer).
    lanes = {t: asyncio.Queue[list[Message]](maxsize=2) for t in INPUTS}
    lanes[topics.EVENTS] = lanes[topics.RECOGNITION]  # one stage fans both out
    transport.tune(app, settings.embedded, lanes)
    for name in INPUTS:
        app.topics.add(app.topic(name))  # subscribed, its offsets acked and committed
    dlq = app.topic(topics.dlq(topics.RECOGNITION), key_serializer="raw", value_serializer="raw")
    facts = app.topic(topics.TEAM_FACTS, key_serializer="raw", value_serializer="raw")
    survey_dlq = app.topic(topics.dlq(topics.SURVEY), key_serializer="raw", value_serializer="raw")
    facts_dlq = app.topic(
        topics.dlq(topics.TEAM_FACTS), key_serializer="raw", value_serializer="raw"
    )
    table = app.Table(topics.TEAM_DAYS_TABLE, partitions=n)  # JSON keys and values
    changelog = table.changelog_topic
    # Per bucket key: service.seen_ids, for the buckets used last (old days rarely are).
    seen_cache: OrderedDict[str, set[int]] = OrderedDict()
    trust_table = app.Table(topics.TEAM_TRUST_TABLE, partitions=n)
    event_table = app.Table(topics.EVENT_IDS_TABLE, partitions=n)
    seen_events = once.SeenEvents(event_table.data, settings.dedupe_horizon_days)
    questions = catalogue(settings)
    known_values = frozenset(settings.values)
    surveys = Surveys(trust_table.data, questions, settings.anonymity_k, settings.comment_k)
    metrics = AggregatorMetrics(registry or CollectorRegistry())
    for source in (topics.RECOGNITION, topics.SURVEY, topics.TEAM_FACTS):
        metrics.dlq.labels(source)  # a series at 0 from the start, not only after a first
    directory = Roster(settings)
    days_by_team: dict[str, set[str]] = defaultdict(set)
    partitioner = DefaultPartitioner()
    dirty: set[str] = set()  # teams whose snapshot is older than their tables
    expired_before = [""]  # the day the events past the horizon were last forgotten
    gate = Gate()

    def key_partition(key: str) -> int:
        # The partition a producer picks for this key (murmur2, as Java's).
        return int(partitioner(key.encode(), list(range(n)), list(range(n))))

    team_partition = functools.cache(key_partition)

    async def publish_snapshot(team_id: str) -> Awaitable[Any]:
        buckets = {d: table.data[service.table_key(team_id, d)] for d in days_by_team[team_id]}
        now = datetime.now(UTC)
        data = service.build_snapshot(team_id, buckets, surveys.team_trust(team_id), now)
        if over := service.fit_snapshot(data, MAX_SNAPSHOT_BYTES):
            log.warning("snapshot of %s was %d bytes over; oldest comments/days left out",
                        team_id, over)  # fmt: skip
            metrics.trimmed.inc()
        ce = CloudEvent(f"{team_id}@{now.isoformat()}", SOURCE, TEAM_SNAPSHOT, now, data)
        headers, value = encode(ce)
        return await send(topics.SNAPSHOTS, team_id.encode(), value, headers=headers)

    async def publish_snapshots_of(teams: list[str]) -> None:
        # A slice at a time: with thousands of teams, all their snapshots at once would
        # sit in the producer's buffers together (over 100 MB with 5,000 teams).
        for i in range(0, len(teams), SNAPSHOT_SLICE):
            await asyncio.gather(
                *[await publish_snapshot(t) for t in teams[i : i + SNAPSHOT_SLICE]]
            )

    async def send(
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]:
        """Straight to faust's producer: its Topic.send costs more than a fact's processing."""
        return await app.producer.send(topic, key, value, partition, None, headers)

    async def to_dlq(message: Message, reason: str, topic: faust.TopicT = dlq) -> Awaitable[Any]:
        log.warning("record from %s sent to DLQ: %s", message.topic, reason)
        metrics.dlq.labels(message.topic).inc()
        headers = [*headers_of(message), (DLQ_REASON, reason.encode())]
        return await topic.send(key=message.key, value=message.value, headers=headers, force=True)

    def recognition_of(message: Message) -> tuple[CloudEvent, RecognitionGiven]:
        """Decode one recognition; raise if it cannot be counted."""
        ce = decode(headers_of(message), message.value)
        if ce.type != RECOGNITION_GIVEN:
            raise CodecError(f"unexpected ce_type {ce.type!r}")
        recognition = RecognitionGiven.model_validate(ce.data)
        if not known_values.issuperset(recognition.values):
            raise CodecError(f"unknown value in {list(recognition.values)}")
        return ce, recognition

    async def team_facts_of(
        ce: CloudEvent, recognition: RecognitionGiven, now: datetime
    ) -> list[service.TeamFact]:
        lag = (now - recognition.occurred_at).total_seconds()
        metrics.event_time_lag.observe(max(0.0, lag))
        try:
            return service.fan_out(ce.source, ce.id, recognition, directory.get)
        except service.Unresolvable:
            await directory.sync()  # the person may have been added a moment ago
            return service.fan_out(ce.source, ce.id, recognition, directory.get)

    async def fan_out_batch(messages: list[Message]) -> tuple[list[Awaitable[Any]], int]:
        sent = []
        by_partition: dict[int, list[service.TeamFact]] = defaultdict(list)
        first_seen: dict[int, list[int]] = defaultdict(list)  # partition -> event, record
        now = datetime.now(UTC)
        day = now.date().isoformat()
        for message in messages:
            try:
                ce, recognition = recognition_of(message)
            except (CodecError, ValidationError) as exc:
                sent.append(await to_dlq(message, str(exc)))
                continue
            partition = key_partition(event_key(ce.source, ce.id))
            if partition != message.partition:  # another producer's key: to its partition
                sent.append(await send(topics.EVENTS, None, message.value, partition,
                                       list(headers_of(message))))  # fmt: skip
                continue
            event = once.event_hash(ce.source, ce.id)
            record = once.record_hash(message.value, headers_of(message))
            verdict = seen_events.verdict(partition, event, record)
            if verdict == "duplicate":  # the same event id, another record: counted once
                metrics.duplicates.inc()
                continue
            try:
                team_facts = await team_facts_of(ce, recognition, now)
            except service.Unresolvable as exc:
                sent.append(await to_dlq(message, str(exc)))
                continue
            if verdict == "new":
                seen_events.add(partition, event, record)  # a second in this batch: duplicate
                first_seen[partition] += [event, record]
            for f in team_facts:
                by_partition[team_partition(f.team_id)].append(f)
        topic = event_table.changelog_topic.get_topic_name()
        for partition, pairs in first_seen.items():
            for key, value in seen_events.remember(partition, day, pairs):
                sent.append(await send(topic, orjson.dumps(key), orjson.dumps(value), partition))
        if day != expired_before[0]:  # a new day (or new partitions): forget the oldest
            expired_before[0] = day
            for key in seen_events.expired(now.date()):  # a tombstone each
                sent.append(await send(topic, orjson.dumps(key), None, int(key.split("/")[0])))
        for partition, team_facts in by_partition.items():
            for i in range(0, len(team_facts), FACTS_PER_RECORD):
                value = service.dumps(team_facts[i : i + FACTS_PER_RECORD])
                sent.append(await send(topics.TEAM_FACTS, None, value, partition))
        return sent, len(messages)

    def feedback_of(message: Message) -> tuple[CloudEvent, Feedback]:
        """Decode and check one survey-topic event; raise if it cannot be counted."""
        ce = decode(headers_of(message), message.value)
        if ce.type == SURVEY_RESPONSE:
            response = SurveyResponded.model_validate(ce.data)
            questions.check_answers(response.answers)
            return ce, response
        if ce.type == SELF_ASSESSMENT:
            assessment = SelfAssessed.model_validate(ce.data)
            questions.check_predicted(assessment.predicted)
            return ce, assessment
        if ce.type == ROUND_CLOSED:
            return ce, RoundClosed.model_validate(ce.data)
        raise CodecError(f"unexpected ce_type {ce.type!r}")

    async def forward_batch(messages: list[Message]) -> tuple[list[Awaitable[Any]], int]:
        sent = []
        for message in messages:
            try:
                item = feedback_of(message)[1]
            except (CodecError, ValueError) as exc:  # pydantic's ValidationError included
                sent.append(await to_dlq(message, str(exc), survey_dlq))
                continue
            headers = list(headers_of(message))
            if isinstance(item, RoundClosed):  # closes the round on the same partition
                where: dict[str, Any] = {"key": None, "partition": message.partition}
            else:
                where = {"key": item.team_id.encode()}
            sent.append(await facts.send(value=message.value, headers=headers, force=True, **where))
        return sent, len(messages)

    async def apply_feedback(message: Message, sent: list[Awaitable[Any]]) -> None:
        try:
            ce, item = feedback_of(message)
            updates, moved = surveys.changes(ce, item, message.partition, team_partition)
        except Exception as exc:  # one record, whatever is wrong with it: never a crash loop
            log.warning("survey record at %s/%d not counted: %r", message.tp, message.offset,
                        exc)  # fmt: skip
            sent.append(await to_dlq(message, f"{type(exc).__name__}: {exc}", survey_dlq))
            return
        surveys.commit(updates)
        topic = trust_table.changelog_topic.get_topic_name()
        for key, value in updates:
            # Raw JSON as the table reads it back; None deletes the key on recovery.
            raw = orjson.dumps(value) if value is not None else None
            sent.append(await send(topic, orjson.dumps(key), raw, message.partition))
        dirty.update(moved)

    async def aggregate_batch(messages: list[Message]) -> tuple[list[Awaitable[Any]], int]:
        grouped: dict[tuple[str, int], list[service.TeamFact]] = defaultdict(list)
        sent: list[Awaitable[Any]] = []
        handled = 0
        for message in messages:
            if any(h == "ce_type" for h, _ in headers_of(message)):
                # A forwarded survey event (recognition facts carry no headers).
                await apply_feedback(message, sent)
                handled += 1
                continue
            try:
                team_facts = service.loads(message.value or b"[]")  # None: no facts
            except (ValueError, TypeError) as exc:  # not written by a worker: never a crash loop
                sent.append(await to_dlq(message, f"unreadable team facts: {exc}", facts_dlq))
                continue
            for f in team_facts:
                grouped[(service.table_key(f.team_id, f.day), message.partition)].append(f)
                handled += 1
        for (key, partition), team_facts in grouped.items():
            bucket = service.apply(table.data.get(key), team_facts, seen_of(key))
            if bucket is not None:
                updates: list[tuple[str, Any]] = [(key, bucket)]
                sealed = service.seal(bucket)
                if sealed is not None:
                    # First: a partition keeps its order, so the chunk is on the log
                    # before the bucket that counts it (see service.seal).
                    updates.insert(0, (service.chunk_key(key, sealed[0]), sealed[1]))
                for k, value in updates:
                    table.data[k] = value
                    # JSON, as the table's serializers read it back; written with the
                    # source event's partition: stream, table and changelog stay
                    # co-partitioned.
                    record = orjson.dumps(k), orjson.dumps(value)
                    sent.append(await send(changelog.get_topic_name(), *record, partition))
            team_id, day = service.split_key(key)
            days_by_team[team_id].add(day)
            # Republished even for duplicates: a crash may have come before the
            # snapshot of the first delivery went out.
            dirty.add(team_id)
        return sent, handled

    def seen_of(key: str) -> set[int]:
        if key in seen_cache:
            seen_cache.move_to_end(key)
            return seen_cache[key]
        chunk = lambda n: table.data[service.chunk_key(key, n)]  # noqa: E731
        seen = seen_cache[key] = service.seen_ids(table.data.get(key), chunk)
        if len(seen_cache) > SEEN_CACHE_BUCKETS:
            seen_cache.popitem(last=False)
        return seen

    @app.timer(SNAPSHOT_EVERY_S)  # type: ignore[untyped-decorator]  # faust is untyped here
    async def publish_snapshots() -> None:
        """Publish the teams that changed since the last tick, once each however busy.

        After a crash, the worker that takes over republishes every team it recovers,
        so a snapshot lost here is written again from the tables.
        """
        if not dirty:
            return
        active = {tp.partition for tp in app.assignor.assigned_actives()
                  if tp.topic == topics.TEAM_FACTS}  # fmt: skip
        teams = [t for t in dirty if team_partition(t) in active]
        dirty.clear()
        try:
            await publish_snapshots_of(teams)
        except Exception:
            log.exception("publishing snapshots failed; exiting so that they are rebuilt")
            os._exit(1)

    @app.task  # type: ignore[untyped-decorator]  # as above
    async def fan_out() -> None:
        await directory.start()
        await in_batches(app, lanes[topics.RECOGNITION], fan_out_batch, "fan_out", metrics, gate)

    @app.task  # type: ignore[untyped-decorator]  # as above
    async def forward() -> None:
        await in_batches(app, lanes[topics.SURVEY], forward_batch, "forward", metrics, gate)

    @app.task  # type: ignore[untyped-decorator]  # as above
    async def aggregate() -> None:
        await in_batches(app, lanes[topics.TEAM_FACTS], aggregate_batch, "aggregate", metrics, gate)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as below
    async def finish_batches(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for lane in lanes.values():  # faust seeks back to the committed offsets
            while not lane.empty():
                lane.get_nowait()
        await gate.close()  # opened again once the tables are recovered

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's handler type is too narrow
    async def stop_directory(sender: Any, **kwargs: Any) -> None:
        await directory.stop()

    @table.on_recover  # called once every table is recovered, trust_table included
    async def republish() -> None:
        """After a rebalance, republish every team this worker now owns."""
        days_by_team.clear()
        seen_cache.clear()  # the tables may have changed under it
        for key in list(table.data.keys()):
            if not service.is_chunk_key(key):
                team_id, day = service.split_key(key)
                days_by_team[team_id].add(day)
        active = {tp.partition for tp in app.assignor.assigned_actives()
                  if tp.topic == topics.TEAM_FACTS}  # fmt: skip
        surveys.rebuild()
        seen_events.rebuild(active)  # co-partitioned: the recognition partitions too
        expired_before[0] = ""  # the next batch forgets what is past the horizon
        teams = set(days_by_team) | set(surveys.teams())
        owned = [t for t in sorted(teams) if team_partition(t) in active]
        dirty.difference_update(owned)
        await publish_snapshots_of(owned)
        log.info("recovered; republished %d team snapshots", len(owned))
        metrics.partitions.set(len(active))
        gate.open()

    return app
