"""Rapport's services on a test broker: their environment, in-process settings, and
``rapport <service>`` processes that are all stopped after the test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.settings import RunSettings
from shared.contract.topics import create_topics
from shared.infra.broker import free_port
from tests.support import ROOT
from tests.support.brokers import Broker


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
def settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> RunSettings:
    """Settings for in-process services (every service's), with every topic created."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = RunSettings()
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
