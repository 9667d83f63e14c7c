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
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh, empty Tansu broker on a free port."""
    port = free_port()
    b = Broker(port, start_tansu(port))
    try:
        yield b
    finally:
        b.stop()


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


@pytest.fixture
def env(broker: Broker, tmp_path: Path) -> dict[str, str]:
    """Environment for Rapport processes using the test broker and free ports."""
    values = {
        "RAPPORT_ENVIRONMENT": "development",
        "RAPPORT_EMBEDDED_BROKER_PORT": str(broker.port),
        "RAPPORT_VAR_DIR": str(tmp_path / "var"),
        "RAPPORT_RECOGNITION_PORT": str(free_port()),
        "RAPPORT_METRICS_PORT": str(free_port()),
        "RAPPORT_TOPIC_PARTITIONS": "4",
        "RAPPORT_DEMO": "0",
        "RAPPORT_AGGREGATOR_METRICS_PORT": "0",  # tests that read it give a free port
    }
    return values


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
