"""Committed lag as Kafka's own tools define it (log end minus the group's committed
offset), measured against a real broker's group coordinator, on both brokers."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from services.aggregator.lag import CommittedLag
from shared.contract import topics
from shared.infra.settings import Settings
from tests.support.kafka import produce_raw


async def commit(settings: Settings, offsets: dict[TopicPartition, int]) -> None:
    """Commit for the aggregator's group, as a worker would."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=topics.AGGREGATOR_APP_ID,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()})
    finally:
        await consumer.stop()


async def measure(settings: Settings, partitions: list[TopicPartition]) -> dict[str, int]:
    lag = CommittedLag(settings, topics.Generation())
    await lag.start()
    try:
        return await lag.measure(partitions)
    finally:
        await lag.stop()


def test_committed_lag_is_the_log_end_minus_the_groups_commit(settings: Settings) -> None:
    recognitions = TopicPartition(topics.RECOGNITION, 0)
    moved = TopicPartition(topics.EVENTS, 1)
    facts = TopicPartition(topics.TEAM_FACTS, 1)
    survey = TopicPartition(topics.SURVEY, 2)
    for tp, n in ((recognitions, 10), (moved, 2), (facts, 4), (survey, 3)):
        for _ in range(n):
            asyncio.run(produce_raw(settings, tp.topic, b"{}", tp.partition))
    asyncio.run(commit(settings, {recognitions: 4, moved: 2, survey: 3}))  # facts: never
    mine = [recognitions, moved, facts, survey, TopicPartition(topics.RECOGNITION, 1)]
    lag = asyncio.run(measure(settings, mine))
    # 10 - 4 and 2 - 2; facts from their start; the empty partition adds nothing.
    assert lag == {"fan_out": 6, "forward": 0, "aggregate": 4}
