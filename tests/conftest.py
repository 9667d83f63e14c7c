"""Shared fixtures: a real embedded broker (Tansu) per test, settings pointing at it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.apache_kafka import KafkaCluster
from shared.broker import free_port, start_tansu
from shared.settings import Settings
from shared.topics import create_topics

ROOT = Path(__file__).resolve().parent.parent


def wait_until(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last: {last!r})")


@dataclass
class Broker:
    """The broker a test runs on: ``kind`` is "tansu" (embedded) or "kafka" (Apache)."""

    kind: str
    bootstrap_servers: str
    stop: Callable[[], None]
    nodes: int = 1


def _stop_tansu(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)

    return stop


@pytest.fixture(params=["tansu", "kafka"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A fresh, empty broker on free ports: Tansu, and (a second run) Apache Kafka, on
    three nodes for a test marked ``kafka_nodes(3)``."""
    if request.param == "kafka":
        marker = request.node.get_closest_marker("kafka_nodes")
        with KafkaCluster(marker.args[0] if marker else 1, tmp_path / "kafka") as cluster:
            yield Broker("kafka", cluster.bootstrap_servers, cluster.stop, cluster.size)
        return
    port = free_port()
    stop = _stop_tansu(start_tansu(port))
    try:
        yield Broker("tansu", f"127.0.0.1:{port}", stop)
    finally:
        stop()


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A fresh single-node Apache Kafka (KRaft) on free ports; every JVM stopped after."""
    with KafkaCluster(1, tmp_path / "kafka") as cluster:
        yield cluster


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    """Three Apache Kafka nodes: replication factor 3, min.insync.replicas 2."""
    with KafkaCluster(3, tmp_path / "kafka") as cluster:
        yield cluster


def rapport_env(
    kind: str, bootstrap_servers: str, tmp_path: Path, nodes: int = 1
) -> dict[str, str]:
    """Environment for Rapport processes on a test broker ("tansu" or "kafka", on
    ``nodes`` nodes: every topic on each), free ports."""
    if kind == "kafka":
        on = {"RAPPORT_KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers,
              "RAPPORT_SESSION_TIMEOUT_S": "6",  # rebalances in seconds
              "RAPPORT_TOPIC_REPLICATION_FACTOR": str(nodes)}  # fmt: skip
    else:
        on = {"RAPPORT_EMBEDDED_BROKER_PORT": bootstrap_servers.rpartition(":")[2]}
    return {
        **on,
        "RAPPORT_ENVIRONMENT": "development",
        "RAPPORT_VAR_DIR": str(tmp_path / "var"),
        "RAPPORT_RECOGNITION_PORT": str(free_port()),
        "RAPPORT_METRICS_PORT": str(free_port()),
        "RAPPORT_TOPIC_PARTITIONS": "4",
        "RAPPORT_DEMO": "0",
        "RAPPORT_AGGREGATOR_METRICS_PORT": "0",  # tests that read it give a free port
    }


@pytest.fixture
def env(broker: Broker, tmp_path: Path) -> dict[str, str]:
    """Environment for Rapport processes using the test broker and free ports."""
    return rapport_env(broker.kind, broker.bootstrap_servers, tmp_path, broker.nodes)


@pytest.fixture
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings for in-process services, with every topic created."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    asyncio.run(create_topics(s))
    return s


@pytest.fixture
def spawn(env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``rapport <args>`` processes; all are stopped after the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str, log: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", *args],
            env={**os.environ, **env, **(extra_env or {})},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
