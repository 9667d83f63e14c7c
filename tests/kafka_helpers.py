"""Plain-Kafka helpers for tests: produce and read records as any outside app would."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.codec import CloudEvent, encode
from shared.events import PERSON, Person
from shared.settings import Settings
from shared.topics import DIRECTORY
from shared.views import partitions_of


async def read_all(settings: Settings, topic: str, timeout_s: float = 5.0) -> list[Any]:
    """Every record on ``topic`` right now, in partition then offset order."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await partitions_of(consumer, topic))]
        consumer.assign(tps)
        for tp in tps:  # not seek_to_beginning: Tansu's "earliest" can be past offset 0
            consumer.seek(tp, 0)
        ends = await consumer.end_offsets(tps)  # see shared.views: whole batches come back
        records: list[Any] = []
        async with asyncio.timeout(timeout_s):
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=200)
                    records.extend(batch.get(tp, []))
        return records
    finally:
        await consumer.stop()


async def produce(
    settings: Settings, topic: str, records: list[tuple[bytes | None, CloudEvent]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        futures = []
        for key, event in records:
            headers, value = encode(event)
            futures.append(await producer.send(topic, value, key=key, headers=headers))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def produce_raw(settings: Settings, topic: str, value: bytes, partition: int = 0) -> None:
    """One record that is not a CloudEvent at all, as a careless producer would write."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await (await producer.send(topic, value, partition=partition))
    finally:
        await producer.stop()


async def put_people(settings: Settings, people: list[Person]) -> None:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    await produce(
        settings,
        DIRECTORY,
        [
            (p.id.encode(), CloudEvent(f"dir-{p.id}", "/tests", PERSON, now, p.model_dump()))
            for p in people
        ],
    )
