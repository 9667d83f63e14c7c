"""The brokers tests run on. Starting one is what a test used to wait for most (a JVM per
Apache Kafka node), so each kind is started once per session: one Tansu, one single-node
Apache Kafka and, for the tests that need replication, one three-node cluster. After each
test its broker is emptied: every topic is deleted (which also drops the consumer groups'
offsets on them), so the next test starts from nothing, as on a fresh broker. A test that
stops its broker gets one of its own (``@pytest.mark.own_broker``)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.devtools.apache_kafka import KafkaCluster
from shared.infra.broker import free_port, start_tansu

KINDS = ["tansu", "kafka"]


@dataclass
class Broker:
    """The broker a test runs on: ``kind`` is "tansu" (embedded) or "kafka" (Apache)."""

    kind: str
    bootstrap_servers: str
    stop: Callable[[], None]
    nodes: int = 1


def _shared(kind: str, bootstrap_servers: str, nodes: int = 1) -> Broker:
    def stop() -> None:
        raise AssertionError("a shared broker: mark the test own_broker to stop its broker")

    return Broker(kind, bootstrap_servers, stop, nodes)


class Tansu:
    """A memory-only Tansu on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = start_tansu(self.port)
        self.bootstrap_servers = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _delete_topics(bootstrap_servers: str, timeout_s: float = 30.0) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while names := [t for t in await admin.list_topics() if not t.startswith("__")]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics still there after {timeout_s} s: {names}")
            await admin.delete_topics(names)
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


def empty(bootstrap_servers: str) -> None:
    """Delete every topic but the broker's own (``__consumer_offsets`` and the like)."""
    asyncio.run(_delete_topics(bootstrap_servers))


def restore(cluster: KafkaCluster) -> None:
    """Start again any node a test stopped or killed, and wait until all are brokers."""
    stopped = [n.id for n in cluster.nodes if n.proc is None or n.proc.poll() is not None]
    for node_id in stopped:
        cluster.start_node(node_id)
    if stopped:
        cluster.wait_ready()


@pytest.fixture(scope="session")
def shared_tansu() -> Iterator[Tansu]:
    tansu = Tansu()
    try:
        yield tansu
    finally:
        tansu.stop()


@pytest.fixture(scope="session")
def shared_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(1, tmp_path_factory.mktemp("kafka")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def shared_kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    with KafkaCluster(3, tmp_path_factory.mktemp("kafka-cluster")) as cluster:
        yield cluster


def _own(kind: str, nodes: int, tmp_path: Path) -> Iterator[Broker]:
    if kind == "kafka":
        with KafkaCluster(nodes, tmp_path / "kafka") as cluster:
            yield Broker(kind, cluster.bootstrap_servers, cluster.stop, cluster.size)
        return
    tansu = Tansu()
    try:
        yield Broker(kind, tansu.bootstrap_servers, tansu.stop)
    finally:
        tansu.stop()


@pytest.fixture(params=KINDS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """An empty broker: the session's Tansu, and (a second run) its Apache Kafka, the
    three-node one for a test marked ``kafka_nodes(3)``; one of the test's own if marked
    ``own_broker``."""
    marker = request.node.get_closest_marker("kafka_nodes")
    nodes = marker.args[0] if marker and request.param == "kafka" else 1
    if request.node.get_closest_marker("own_broker"):
        yield from _own(request.param, nodes, tmp_path)
        return
    if request.param == "tansu":
        tansu: Tansu = request.getfixturevalue("shared_tansu")
        try:
            yield _shared("tansu", tansu.bootstrap_servers)
        finally:
            empty(tansu.bootstrap_servers)
        return
    cluster = request.getfixturevalue("kafka_cluster" if nodes == 3 else "kafka")
    yield _shared("kafka", cluster.bootstrap_servers, cluster.size)


@pytest.fixture
def kafka(shared_kafka: KafkaCluster) -> Iterator[KafkaCluster]:
    """The session's single-node Apache Kafka (KRaft), empty and running: started again
    after the test if it killed it."""
    try:
        yield shared_kafka
    finally:
        restore(shared_kafka)
        empty(shared_kafka.bootstrap_servers)


@pytest.fixture
def kafka_cluster(shared_kafka_cluster: KafkaCluster) -> Iterator[KafkaCluster]:
    """The session's three Apache Kafka nodes (replication factor 3, min.insync.replicas
    2), empty and all running: a node the test stopped is started again after it."""
    try:
        yield shared_kafka_cluster
    finally:
        restore(shared_kafka_cluster)
        empty(shared_kafka_cluster.bootstrap_servers)
