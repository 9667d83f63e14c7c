"""Committed lag: how far the group's committed offsets are behind each log's end, as
Kafka's own ``kafka-consumer-groups --describe`` and outside lag monitors see it.

``rapport_aggregator_consumer_lag`` says how far a worker's processing is behind what
it has fetched: 0-4 records during a 1,000-kudos load while the group's commits were
21-323 behind. What a restart would read again, and what an alert must watch, is the
committed lag: measured here every ``EVERY_S`` for this worker's partitions, by asking
the broker (the group coordinator for committed offsets, a fetch for the log ends),
never from the worker's own bookkeeping, so a worker that stops committing shows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from shared.contract import topics
from shared.infra.gaps import log_ends
from shared.infra.settings import Settings

log = logging.getLogger(__name__)
EVERY_S = 5.0
# The topics each stage reads (fan_out also reads the recognitions it moved).
STAGES: Mapping[str, tuple[str, ...]] = {
    "fan_out": (topics.RECOGNITION, topics.EVENTS),
    "forward": (topics.SURVEY,),
    "aggregate": (topics.TEAM_FACTS,),
}


def per_stage(
    partitions: Iterable[TopicPartition],
    starts: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    committed: Mapping[TopicPartition, int],
    generation: topics.Generation | None = None,
) -> dict[str, int]:
    """Records between each partition's committed offset (its start where the group
    never committed) and its end, summed by stage."""
    g = generation or topics.Generation()
    lag = dict.fromkeys(STAGES, 0)
    stage_of = {g.of(topic): stage for stage, names in STAGES.items() for topic in names}
    for tp in partitions:
        if tp.topic in stage_of and tp in ends:
            since = committed.get(tp, starts.get(tp, 0))
            lag[stage_of[tp.topic]] += max(0, ends[tp] - since)
    return lag


class CommittedLag:
    """Reads the group's committed offsets and the log ends of ``partitions()``."""

    def __init__(self, settings: Settings, generation: topics.Generation) -> None:
        self._generation = generation
        self._bootstrap = settings.bootstrap_servers
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap,
                                          enable_auto_commit=False)  # fmt: skip

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def measure(self, partitions: list[TopicPartition]) -> dict[str, int]:
        if not partitions:
            return dict.fromkeys(STAGES, 0)
        offsets = await self._admin.list_consumer_group_offsets(
            self._generation.app_id, partitions=partitions
        )
        committed = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
        starts = await self._consumer.beginning_offsets(partitions)
        return per_stage(partitions, starts, await log_ends(self._bootstrap, partitions),
                         committed, self._generation)  # fmt: skip


async def run(
    settings: Settings,
    generation: topics.Generation,
    assigned: Callable[[], Iterable[TopicPartition]],
    gauge: Gauge,
) -> None:
    """Set ``gauge`` (by stage) every ``EVERY_S`` for the partitions ``assigned()`` names;
    a broker that does not answer leaves the last figures and is asked again."""
    lag = CommittedLag(settings, generation)
    await lag.start()
    try:
        while True:
            await asyncio.sleep(EVERY_S)
            inputs = {generation.of(t) for names in STAGES.values() for t in names}
            mine = [tp for tp in assigned() if tp.topic in inputs]
            try:
                async with asyncio.timeout(EVERY_S):
                    figures = await lag.measure(mine)
            except (KafkaError, TimeoutError, OSError) as exc:
                log.info("committed lag not measured this time: %r", exc)
                continue
            for stage, records in figures.items():
                gauge.labels(stage).set(records)
    finally:
        await lag.stop()
