"""Apache Kafka from its Maven jars: one node, and three replicated ones, on loopback."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared import topics
from shared.apache_kafka import KafkaCluster
from shared.codec import CloudEvent, decode
from shared.errors import BrokerUnavailable
from shared.events import PERSON
from shared.kafka import Publisher, Record
from shared.settings import Settings
from shared.topics import create_topics
from tests.conftest import wait_until
from tests.kafka_helpers import read_all


def settings_for(cluster: KafkaCluster, replication: int) -> Settings:
    return Settings(kafka_bootstrap_servers=cluster.bootstrap_servers,
                    topic_replication_factor=replication, topic_partitions=4)  # fmt: skip


async def publish_one(settings: Settings, n: int) -> None:
    person = {"id": f"p{n}", "name": "P", "email": f"p{n}@x.io", "team_id": "t"}
    ce = CloudEvent(f"e{n}", "/test", PERSON, datetime.now(UTC), person)
    publisher = Publisher(settings)
    await publisher.start()
    try:
        await publisher.publish([Record.of(topics.DIRECTORY, f"p{n}", ce)])
    finally:
        await publisher.stop()


def accepted(settings: Settings, n: int) -> bool:
    """Publish as a client does: a 503 (broker unavailable) is tried again."""
    try:
        asyncio.run(publish_one(settings, n))
    except BrokerUnavailable:
        return False
    return True


def test_one_node_takes_events_and_every_jvm_stops_even_when_the_block_fails(
    tmp_path: Path,
) -> None:
    cluster = KafkaCluster(1, tmp_path / "kafka")
    with pytest.raises(RuntimeError, match="a test fails"), cluster:
        settings = settings_for(cluster, 1)
        asyncio.run(create_topics(settings))
        asyncio.run(publish_one(settings, 1))
        [record] = asyncio.run(read_all(settings, topics.DIRECTORY))
        assert decode(record.headers, record.value).id == "e1"
        raise RuntimeError("a test fails")
    assert all(n.proc is not None and n.proc.poll() is not None for n in cluster.nodes)


async def describe(settings: Settings) -> tuple[int, dict[str, set[int]], str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        replicas = {
            t["topic"]: {len(p["replicas"]) for p in t["partitions"]}
            for t in await admin.describe_topics([topics.RECOGNITION, topics.DIRECTORY])
        }
        [config] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, "1", {"min.insync.replicas": None})]
        )
        [resource] = config.to_object()["resources"]
        [entry] = resource["config_entries"]
        return brokers, replicas, entry["config_value"]
    finally:
        await admin.close()


def test_three_nodes_replicate_every_topic_and_survive_losing_one(
    kafka_cluster: KafkaCluster,
) -> None:
    settings = settings_for(kafka_cluster, 3)
    asyncio.run(create_topics(settings))
    brokers, replicas, min_isr = asyncio.run(describe(settings))
    assert brokers == 3 and min_isr == "2"
    assert replicas == {topics.RECOGNITION: {3}, topics.DIRECTORY: {3}}
    kafka_cluster.kill(3)  # two of three in sync: acks=all answers once leaders moved
    wait_until(lambda: accepted(settings, 2), timeout=60)
    kafka_cluster.start_node(3)
    kafka_cluster.wait_ready()
    assert accepted(settings, 3)
    ids = sorted(
        decode(r.headers, r.value).id for r in asyncio.run(read_all(settings, topics.DIRECTORY))
    )
    assert ids == ["e2", "e3"]
