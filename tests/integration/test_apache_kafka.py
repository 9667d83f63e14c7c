"""Apache Kafka from its Maven jars: one node, and three replicated ones, on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from services.aggregator import transport
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from shared.contract import topics
from shared.contract.codec import CloudEvent, decode
from shared.contract.events import PERSON
from shared.contract.topics import create_topics
from shared.devtools.apache_kafka import KafkaCluster
from shared.infra.broker import free_port, start_tansu
from shared.infra.errors import BrokerUnavailable
from shared.infra.kafka import BrokerRefusedIdempotence, Publisher, Record
from shared.infra.settings import Settings
from tests.support import ROOT, wait_until
from tests.support.kafka import produce_raw, read_all
from tests.support.metrics import scrape
from tests.support.services import rapport_env


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


def test_producers_are_idempotent_outside_embedded_mode_or_refuse_to_start(
    kafka: KafkaCluster, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(create_topics(settings_for(kafka, 1)))
    asyncio.run(publish_one(settings_for(kafka, 1), 1))  # Apache Kafka: idempotent, started
    port = free_port()
    tansu = start_tansu(port)
    try:
        embedded = Settings(embedded_broker_port=port)
        caplog.set_level(logging.INFO)
        asyncio.run(create_topics(embedded))
        asyncio.run(publish_one(embedded, 2))  # embedded: acks=all, and no ERROR line
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        # The same broker named as a production one: no silent fallback.
        production = Settings(kafka_bootstrap_servers=f"127.0.0.1:{port}")
        with pytest.raises(BrokerRefusedIdempotence, match="refused an idempotent producer"):
            asyncio.run(publish_one(production, 3))
    finally:
        tansu.terminate()
        tansu.wait(timeout=10)


def test_the_aggregator_produces_idempotently_on_apache_kafka_only() -> None:
    """Pins faust's ``Producer._settings_extra``, which ``transport.IdempotentProducer``
    overrides: it must still be where faust's producer settings are completed."""
    on_kafka = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))
    assert on_kafka.producer._settings_extra() == {"acks": "all", "enable_idempotence": True}

    async def given_to_aiokafka() -> bool:
        producer = on_kafka.producer._new_producer()
        await producer.stop()  # never started: nothing to flush
        return producer._txn_manager is not None  # aiokafka: set only when idempotent

    assert asyncio.run(given_to_aiokafka())
    embedded = create_app(AggregatorSettings())
    assert "enable_idempotence" not in embedded.producer._settings_extra()


def test_a_partition_without_commit_is_not_sought_back_by_aiokafka(kafka: KafkaCluster) -> None:
    """Pins what ``transport.Consumer.seek_to_committed`` works around: aiokafka leaves a
    partition with no committed offset where it was, past the records faust dropped."""
    settings = settings_for(kafka, 1)
    asyncio.run(create_topics(settings))
    for n in range(5):
        asyncio.run(produce_raw(settings, topics.TEAM_FACTS, f"[{n}]".encode()))
    tp = TopicPartition(topics.TEAM_FACTS, 0)

    async def position_after_seek_to_committed() -> tuple[int, int | None, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers,
                                    group_id="pin", enable_auto_commit=False,
                                    auto_offset_reset="earliest")  # as faust  # fmt: skip
        await consumer.start()
        try:
            consumer.assign([tp])
            fetched = 0
            while fetched < 5:
                fetched += len((await consumer.getmany(tp, timeout_ms=1000)).get(tp, []))
            read_to = await consumer.position(tp)
            committed = (await consumer.seek_to_committed(tp))[tp]
            return read_to, committed, await consumer.position(tp)
        finally:
            await consumer.stop()

    # The day this fails, aiokafka seeks such partitions itself and the override can go.
    assert asyncio.run(position_after_seek_to_committed()) == (5, None, 5)


def running(port: int) -> bool:
    """Whether the worker serving /metrics on ``port`` owns its partitions and has
    measured its committed lag once."""
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    lag = any(name.startswith("rapport_aggregator_committed_lag{") for name in samples)
    return lag and samples.get("rapport_aggregator_partitions", 0) > 0


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_stops_within_seconds_even_when_the_broker_is_gone(
    kafka: KafkaCluster, tmp_path: Path, stop: signal.Signals
) -> None:
    asyncio.run(create_topics(settings_for(kafka, 1)))
    log = tmp_path / "worker.log"
    port = free_port()
    env = {**os.environ, **rapport_env("kafka", kafka.bootstrap_servers, tmp_path),
           "RAPPORT_AGGREGATOR_METRICS_PORT": str(port)}  # fmt: skip
    with log.open("wb") as out:
        command = [sys.executable, "-m", "services.cli", "aggregator"]
        worker = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        # Running, not only ready: its tasks past their own connections to the broker
        # (killed sooner, one of them cannot connect and the worker exits at once, 1).
        wait_until(lambda: running(port), timeout=60)
        kafka.kill(1)
        time.sleep(2)
        asked = time.monotonic()
        worker.send_signal(stop)
        returncode = worker.wait(timeout=30)
        took = time.monotonic() - asked
    finally:
        worker.kill()
    # Non-zero: it could not leave cleanly, so a supervisor starts it again.
    assert returncode == transport.EXIT_CUT_SHORT
    assert took < transport.STOP_GRACE_S + 3
    assert f"not stopped 6 s after {stop.name}" in log.read_text()
