"""The whole stack as `make run` starts it, on free ports: on its own embedded broker (as
`make run` starts one) and on the session's Apache Kafka."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.devtools.apache_kafka import KafkaCluster
from shared.infra.broker import free_port
from tests.support import ROOT
from tests.support.brokers import KINDS


@pytest.fixture(params=KINDS)
def stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """`rapport run` on free ports, on the embedded broker and on Apache Kafka; demo data
    only if the test is marked ``demo``."""
    if request.param == "tansu":
        yield from _run(tmp_path, request, {"RAPPORT_EMBEDDED_BROKER_PORT": str(free_port())})
        return
    kafka: KafkaCluster = request.getfixturevalue("kafka")
    yield from _run(tmp_path, request, {
        "RAPPORT_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "RAPPORT_SESSION_TIMEOUT_S": "6",  # rebalances in seconds
    })  # fmt: skip


def _run(
    tmp_path: Path, request: pytest.FixtureRequest, broker: dict[str, str]
) -> Iterator[dict[str, str]]:
    env = {
        **broker,
        "RAPPORT_ENVIRONMENT": "development",  # as `make run` says
        "RAPPORT_RECOGNITION_PORT": str(free_port()),
        "RAPPORT_METRICS_PORT": str(free_port()),
        "RAPPORT_FEEDBACK_PORT": str(free_port()),
        "RAPPORT_DIGEST_PORT": str(free_port()),
        "RAPPORT_AGGREGATOR_METRICS_PORT": str(free_port()),
        "RAPPORT_SMTP_PORT": str(free_port()),
        "RAPPORT_DIGEST_CHECK_S": "20",  # after the demo data is in
        "RAPPORT_DIGEST_HOUR": "0",  # due for every manager, whatever the time zone
        "RAPPORT_VAR_DIR": str(tmp_path / "var"),
        "RAPPORT_DEMO": "1" if request.node.get_closest_marker("demo") else "0",
    }
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run"],
        env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield env
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) is not None
        log.close()
