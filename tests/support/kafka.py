"""Producing and reading records as any outside app would, and the figures the aggregator
published."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contract import topics
from shared.contract.codec import CloudEvent, decode, encode
from shared.contract.events import PERSON, RECOGNITION_GIVEN, Person
from shared.infra.settings import Settings
from shared.infra.views import partitions_of


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
        ends = await consumer.end_offsets(tps)  # see shared.infra.views: whole batches come back
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
    now = datetime.now(UTC)
    await produce(
        settings,
        topics.DIRECTORY,
        [
            (p.id.encode(), CloudEvent(f"dir-{p.id}", "/tests", PERSON, now, p.model_dump()))
            for p in people
        ],
    )


def kudos_event(event_id: str, giver: str, recipients: list[str], source: str) -> CloudEvent:
    """A recognition as a Slack bot would produce it straight onto the topic."""
    now = datetime.now(UTC)
    data = {"giver_id": giver, "recipient_ids": recipients, "message": "thanks",
            "values": ["growth"], "channel": "slack", "occurred_at": now.isoformat()}  # fmt: skip
    return CloudEvent(event_id, source, RECOGNITION_GIVEN, now, data)


def latest_snapshots(settings: Settings) -> dict[str, dict[str, object]]:
    """Each team's latest snapshot on the snapshots topic."""
    records = asyncio.run(read_all(settings, topics.SNAPSHOTS))
    return {r.key.decode(): decode(r.headers, r.value).data for r in records}


def totals(settings: Settings) -> Counter[str]:
    """Recognitions counted per team, from the latest snapshots."""
    snaps = latest_snapshots(settings)
    return Counter({t: sum(s["totals"].values()) for t, s in snaps.items()})  # type: ignore[attr-defined]
