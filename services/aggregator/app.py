"""The aggregator: a faust app whose stages, each in its own module, move records between
topics and the team tables.

rapport.recognition.v1 --fan_out--> rapport.aggregator.team-facts.v1          (fan_out.py)
rapport.feedback.survey.v1 --forward--> team-facts                            (forward.py)
team-facts --aggregate--> tables team-days, team-trust                      (aggregate.py)
tables --every 0.2 s--> rapport.metrics.snapshots.v1                       (publish.py)
the group's committed offsets --every 5 s--> committed lag by stage            (lag.py)
a tick --every forget_within_s / 4--> each topic whose deleted records must go

Each stage runs a batch at a time (batches.py) and writes through output.py, all of it
in produce batches; what is on team-facts, and how each kind is read, is records.py;
every reach into faust's or aiokafka's internals is in transport.py. No stage imports
another: this module wires them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
from typing import Any

import faust
from aiokafka import TopicPartition
from faust.types import Message
from prometheus_client import CollectorRegistry

from shared.contract import topics
from shared.infra.subjects import ResponseKeys
from shared.readmodels.directory import Roster
from shared.readmodels.generations import GenerationView
from shared.readmodels.questions import catalogue

from . import lag, once, service, transport
from .aggregate import Aggregate
from .batches import Gate, Process, in_batches
from .fan_out import FanOut
from .forward import Forward
from .metrics import AggregatorMetrics
from .output import Output, partitioner
from .publish import Snapshots
from .settings import AggregatorSettings
from .surveys import Surveys

log = logging.getLogger(__name__)
Lanes = dict[str, asyncio.Queue[list[Message]]]
FETCH_RECORDS = 2000  # at most per fetch, so per batch
INPUTS = (topics.RECOGNITION, topics.EVENTS, topics.SURVEY, topics.TEAM_FACTS)
# A key no table or view ever sets, as a table's changelog writes it (JSON).
TICK = b'"#tick"'
GENERATION_CHECK_S = 2.0


def create_app(
    settings: AggregatorSettings,
    registry: CollectorRegistry | None = None,
    generation: topics.Generation | None = None,
) -> faust.App:
    """Build the faust app with its topics, tables and stages (metrics in ``registry``),
    of ``generation`` (by default the first)."""
    g = generation or topics.Generation()
    app = faust.App(g.app_id, **_faust_settings(settings))
    # The input topics, each read a fetch at a time (see transport.Consumer).
    lanes = {g.of(t): asyncio.Queue[list[Message]](maxsize=2) for t in INPUTS}
    lanes[g.events] = lanes[topics.RECOGNITION]  # one stage fans both out
    transport.tune(app, settings.embedded, lanes)
    for name in INPUTS:
        app.topics.add(app.topic(g.of(name)))  # subscribed, its offsets acked and committed
    metrics = AggregatorMetrics(registry or CollectorRegistry())
    worker = Worker(app, settings, lanes, metrics, g)
    for task in (worker.fan_out_stage, worker.forward_stage, worker.aggregate_stage,
                 worker.publish, worker.committed_lag, worker.ticks,
                 worker.generations):  # fmt: skip
        app.task(task)
    app.on_partitions_revoked.connect(worker.revoked)  # type: ignore[arg-type]  # see below
    app.on_before_shutdown.connect(worker.stopping)  # type: ignore[arg-type]  # mode's type is too narrow
    worker.days_table.on_recover(worker.recovered)  # once every table is recovered
    return app


def _faust_settings(settings: AggregatorSettings) -> dict[str, Any]:
    n = settings.topic_partitions
    return {
        "broker": [f"kafka://{s}" for s in settings.bootstrap_servers.split(",")],
        "store": "memory://",  # state is rebuilt from the changelog, never kept on disk
        "datadir": tempfile.mkdtemp(prefix="rapport-aggregator-"),
        "topic_partitions": n,
        "topic_replication_factor": settings.topic_replication_factor,
        "broker_session_timeout": settings.session_timeout,
        "broker_heartbeat_interval": max(settings.session_timeout / 6, 0.5),
        "broker_rebalance_timeout": settings.session_timeout * 2,
        "producer_acks": -1,
        "web_enabled": False,
        "stream_wait_empty": False,
        "broker_max_poll_records": FETCH_RECORDS,
        "producer_linger": 0.005,  # a batch's sends go out in a few produce requests
        "producer_max_batch_size": 900_000,  # faust: 16 kB, so many batches per partition
        "Table": transport.Table,  # tables that know how far into their changelog they are
        "table_standby_replicas": 1,  # a copy of each partition's tables on another worker
    }


class Worker:
    """One worker's tables and stages, and what it does when its partitions change."""

    def __init__(
        self,
        app: faust.App,
        settings: AggregatorSettings,
        lanes: Lanes,
        metrics: AggregatorMetrics,
        generation: topics.Generation,
    ) -> None:
        n = settings.topic_partitions
        self.app, self.settings, self.lanes, self.metrics = app, settings, lanes, metrics
        self.generation = generation
        self.days_table = app.Table(topics.TEAM_DAYS_TABLE, partitions=n)  # JSON keys, values
        days = transport.store_of(self.days_table)
        trust = transport.store_of(app.Table(topics.TEAM_TRUST_TABLE, partitions=n))
        event_ids = transport.store_of(app.Table(topics.EVENT_IDS_TABLE, partitions=n))
        days.load = event_ids.load = service.compact  # their ids in arrays, not lists
        for source in (topics.RECOGNITION, topics.SURVEY, topics.TEAM_FACTS):
            metrics.dlq.labels(source)  # a series at 0 from the start, not after a first
        self.out = out = Output(app, metrics, generation)
        partition_of = partitioner(n)
        questions = catalogue(settings)
        self.directory = Roster(settings)
        self.responses = ResponseKeys(settings)
        surveys = Surveys(trust, questions, settings.anonymity_k, settings.comment_k,
                          self.responses)  # fmt: skip
        seen = once.SeenEvents(event_ids, settings.dedupe_horizon_days)
        self.snapshots = Snapshots(out, days, surveys, partition_of, metrics)
        self.fan_out = FanOut(out, self.directory, seen, event_ids, frozenset(settings.values),
                              n, partition_of, metrics)  # fmt: skip
        self.forward = Forward(out, questions, partition_of)
        self.aggregate = Aggregate(out, days, surveys, trust, partition_of,
                                   self.snapshots.changed, self.responses.all_read)  # fmt: skip
        self.gate = Gate()

    async def fan_out_stage(self) -> None:
        await self.directory.start()
        await self._in_batches("fan_out", topics.RECOGNITION, self.fan_out.batch)

    async def forward_stage(self) -> None:
        await self._in_batches("forward", topics.SURVEY, self.forward.batch)

    async def aggregate_stage(self) -> None:
        await self.responses.start(wait=False)  # read once a round closes
        await self._in_batches("aggregate", self.generation.team_facts, self.aggregate.batch)

    async def _in_batches(self, stage: str, topic: str, process: Process) -> None:
        await in_batches(self.app, self.lanes[topic], process, stage, self.metrics, self.gate)

    async def publish(self) -> None:
        try:
            await self.snapshots.run(self._active, self.gate.busy)
        except Exception:
            if self.app.should_stop:  # the producer stopped under a tick: the next owner
                return  # of these partitions republishes every team it takes over
            log.exception("publishing snapshots failed; exiting so that they are rebuilt")
            os._exit(1)

    async def committed_lag(self) -> None:
        def assigned() -> list[TopicPartition]:
            return [TopicPartition(tp.topic, tp.partition) for tp in self.app.consumer.assignment()]

        await lag.run(self.settings, self.generation, assigned, self.metrics.committed_lag)

    async def ticks(self) -> None:
        """A tombstone for a key that is never set (``TICK``) on every partition of each
        topic whose deleted records must go (``topics.forgetting``), every quarter of
        ``forget_within_s``: Apache Kafka rolls a segment, the only way its records can
        be compacted, only when something is appended."""
        if self.settings.embedded:
            return  # its memory storage never compacts anything
        every = {s.name: s.partitions for s in topics.all_topics(self.settings, self.generation)}
        names = topics.forgetting(self.settings, self.generation)
        while True:
            await asyncio.sleep(self.settings.forget_within_s / 4)
            sent = [self.out.write(name, p, TICK, None) for name in names
                    for p in range(every[name])]  # fmt: skip
            failed = [r for r in await asyncio.gather(*sent, return_exceptions=True)
                      if isinstance(r, BaseException)]  # fmt: skip
            if failed:  # the next one will do
                log.warning("%d of %d ticks not written: %r", len(failed), len(sent), failed[0])

    async def generations(self) -> None:
        """Stop (to be started again in it) once a newer generation is current:
        ``rapport replay`` built it beside this one, caught up, and switched to it."""
        view = GenerationView(self.settings)
        await view.start(wait=False)  # it follows the topic: whatever it has read counts
        try:
            while True:
                await asyncio.sleep(GENERATION_CHECK_S)
                if view.current.number > self.generation.number:
                    break
        finally:
            await view.stop()
        log.warning("generation %d is current now (this worker's is %d): stopping, to be "
                    "started again in it", view.current.number, self.generation.number)  # fmt: skip
        os.kill(os.getpid(), signal.SIGTERM)  # the stop a signal makes: committed, cleanly

    async def revoked(self, sender: Any, revoked: Any, **kwargs: Any) -> None:
        for lane in self.lanes.values():  # faust seeks back to the committed offsets
            while not lane.empty():
                lane.get_nowait()
        await self.gate.close()  # opened again once the tables are recovered

    async def stopping(self, sender: Any, **kwargs: Any) -> None:
        await self.directory.stop()
        await self.responses.stop()

    async def recovered(self) -> None:
        """After a rebalance: rebuild what the stages keep beside the tables, and
        republish every team this worker now owns."""
        active = self._active()
        self.aggregate.recovered()
        self.fan_out.recovered(active)  # co-partitioned: the recognition partitions too
        owned = self.snapshots.recovered(active)
        log.info("recovered %d partitions; %d team snapshots to republish", len(active), owned)
        self.metrics.partitions.set(len(active))
        self.gate.open()

    def _active(self) -> set[int]:
        return transport.active_partitions(self.app, self.generation.team_facts)
