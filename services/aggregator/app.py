"""The aggregator: a faust app whose stages, each in its own module, move records between
topics and the team tables.

rapport.recognition.v1 --fan_out--> rapport.aggregator.team-facts.v1          (fan_out.py)
rapport.feedback.survey.v1 --forward--> team-facts                            (forward.py)
team-facts --aggregate--> tables team-days, team-trust                      (aggregate.py)
tables --every 0.2 s--> rapport.metrics.snapshots.v1                       (publish.py)
the group's committed offsets --every 5 s--> committed lag by stage            (lag.py)

Each stage runs a batch at a time (batches.py) and writes through output.py; every
reach into faust's or aiokafka's internals is in transport.py. This module wires them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import Message
from prometheus_client import CollectorRegistry

from shared.contract import topics
from shared.readmodels.directory import Roster
from shared.readmodels.questions import catalogue

from . import lag, once, service, transport
from .aggregate import Aggregate
from .batches import Gate, in_batches
from .fan_out import FanOut
from .forward import Forward
from .metrics import AggregatorMetrics
from .output import Output, partitioner
from .publish import Snapshots
from .settings import AggregatorSettings
from .surveys import Surveys

log = logging.getLogger(__name__)
FETCH_RECORDS = 2000  # at most per fetch, so per batch
INPUTS = (topics.RECOGNITION, topics.EVENTS, topics.SURVEY, topics.TEAM_FACTS)


def create_app(
    settings: AggregatorSettings, registry: CollectorRegistry | None = None
) -> faust.App:
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
        producer_max_batch_size=900_000,  # faust: 16 kB, so a write of many batches per partition
        Table=transport.Table,  # tables that know how far into their changelog they are
        table_standby_replicas=1,  # a copy of each partition's tables on another worker
    )
    # The input topics, each read a fetch at a time (see transport.Consumer).
    lanes = {t: asyncio.Queue[list[Message]](maxsize=2) for t in INPUTS}
    lanes[topics.EVENTS] = lanes[topics.RECOGNITION]  # one stage fans both out
    transport.tune(app, settings.embedded, lanes)
    for name in INPUTS:
        app.topics.add(app.topic(name))  # subscribed, its offsets acked and committed
    days_table = app.Table(topics.TEAM_DAYS_TABLE, partitions=n)  # JSON keys and values
    days = transport.store_of(days_table)
    trust = transport.store_of(app.Table(topics.TEAM_TRUST_TABLE, partitions=n))
    event_ids = transport.store_of(app.Table(topics.EVENT_IDS_TABLE, partitions=n))
    days.load = event_ids.load = service.compact  # their ids in arrays, not lists

    metrics = AggregatorMetrics(registry or CollectorRegistry())
    for source in (topics.RECOGNITION, topics.SURVEY, topics.TEAM_FACTS):
        metrics.dlq.labels(source)  # a series at 0 from the start, not only after a first
    out = Output(app, metrics)
    partition_of = partitioner(n)
    questions = catalogue(settings)
    directory = Roster(settings)
    surveys = Surveys(trust, questions, settings.anonymity_k, settings.comment_k)
    seen = once.SeenEvents(event_ids, settings.dedupe_horizon_days)
    snapshots = Snapshots(out, days, surveys, partition_of, metrics)
    fan_out = FanOut(out, directory, seen, event_ids, frozenset(settings.values), n,
                     partition_of, metrics)  # fmt: skip
    forward = Forward(out, questions, partition_of)
    aggregate = Aggregate(out, days, surveys, trust, questions, partition_of,
                          snapshots)  # fmt: skip
    gate = Gate()

    @app.task  # type: ignore[untyped-decorator]  # faust is untyped here
    async def fan_out_stage() -> None:
        await directory.start()
        await in_batches(app, lanes[topics.RECOGNITION], fan_out.batch, "fan_out", metrics, gate)

    @app.task  # type: ignore[untyped-decorator]  # as above
    async def forward_stage() -> None:
        await in_batches(app, lanes[topics.SURVEY], forward.batch, "forward", metrics, gate)

    @app.task  # type: ignore[untyped-decorator]  # as above
    async def aggregate_stage() -> None:
        await in_batches(app, lanes[topics.TEAM_FACTS], aggregate.batch, "aggregate", metrics,
                         gate)  # fmt: skip

    @app.task  # type: ignore[untyped-decorator]  # as above
    async def publish_stage() -> None:
        try:
            await snapshots.run(
                lambda: transport.active_partitions(app, topics.TEAM_FACTS), gate.busy
            )
        except Exception:
            if app.should_stop:  # the producer stopped under a tick: the next owner of
                return  # these partitions republishes every team it takes over
            log.exception("publishing snapshots failed; exiting so that they are rebuilt")
            os._exit(1)

    @app.task  # type: ignore[untyped-decorator]  # as above
    async def committed_lag() -> None:
        def assigned() -> list[TopicPartition]:
            return [TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment()]

        await lag.run(settings, assigned, metrics.committed_lag)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as below
    async def finish_batches(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for lane in lanes.values():  # faust seeks back to the committed offsets
            while not lane.empty():
                lane.get_nowait()
        await gate.close()  # opened again once the tables are recovered

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's handler type is too narrow
    async def stop_directory(sender: Any, **kwargs: Any) -> None:
        await directory.stop()

    @days_table.on_recover  # called once every table is recovered, the others included
    async def recovered() -> None:
        """After a rebalance: rebuild what the stages keep beside the tables, and
        republish every team this worker now owns."""
        active = transport.active_partitions(app, topics.TEAM_FACTS)
        aggregate.recovered()
        fan_out.recovered(active)  # co-partitioned: the recognition partitions too
        owned = snapshots.recovered(active)
        log.info("recovered %d partitions; %d team snapshots to republish", len(active), owned)
        metrics.partitions.set(len(active))
        gate.open()

    return app
