"""docker-compose.yml is valid for Compose and has the production shape the README promises."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from shared.devtools.apache_kafka import KAFKA_VERSION, broker_settings
from tests.support import ROOT

SECRETS = {"RAPPORT_API_KEYS": "[]", "RAPPORT_MASTER_KEY": "ab" * 32,
           "RAPPORT_DIGEST_LINK_KEY": "l" * 32, "GRAFANA_ADMIN_PASSWORD": "secret"}  # fmt: skip


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose missing: `make test` installs Debian's docker-compose package"
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [tool, "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    done = compose_config(SECRETS)
    assert done.returncode == 0, done.stderr  # validated against the Compose schema
    data: dict[str, Any] = yaml.safe_load(done.stdout)
    return data


def test_required_secrets_stop_compose_with_a_clear_message() -> None:
    done = compose_config({k: v for k, v in SECRETS.items() if k != "RAPPORT_DIGEST_LINK_KEY"})
    assert done.returncode != 0
    assert "set RAPPORT_DIGEST_LINK_KEY in .env" in done.stderr


def test_every_part_of_the_platform_is_there(config: dict[str, Any]) -> None:
    services = config["services"]
    nodes = ["kafka-1", "kafka-2", "kafka-3"]
    assert set(services) == {*nodes, "topics", "recognition", "feedback", "aggregator",
                             "metrics", "digest", "mailpit", "prometheus", "grafana"}  # fmt: skip
    for n, name in enumerate(nodes, 1):
        assert any(f"{name}-data" in str(v) for v in services[name]["volumes"])
        assert services[name]["environment"]["KAFKA_NODE_ID"] in (n, str(n))
        assert services["topics"]["depends_on"][name]["condition"] == "service_healthy"
    assert services["aggregator"]["deploy"]["replicas"] == 2
    for name in ("recognition", "feedback", "metrics", "digest"):
        assert "readyz" in str(services[name]["healthcheck"]["test"]), name
        assert services[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )
    mounts = str(services["prometheus"]["volumes"]) + str(services["grafana"]["volumes"])
    for path in ("deploy/prometheus/rules", "deploy/grafana/provisioning",
                 "deploy/grafana/dashboards"):  # fmt: skip
        assert path in mounts, path


def test_one_image_for_all_services_running_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2  # multi-stage
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")


def test_compose_runs_the_kafka_the_tests_prove(config: dict[str, Any]) -> None:
    """Same version, three KRaft nodes, and every broker setting of the test clusters."""
    services = config["services"]
    rapport = services["recognition"]["environment"]
    assert rapport["RAPPORT_TOPIC_REPLICATION_FACTOR"] == "3"
    assert rapport["RAPPORT_KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    for name in ("kafka-1", "kafka-2", "kafka-3"):
        node = services[name]
        assert node["image"] == f"apache/kafka:{KAFKA_VERSION}"
        env = {k: str(v) for k, v in node["environment"].items()}
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, no ZooKeeper
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16  # a Kafka Uuid
        for key, value in broker_settings(3).items():
            assert env["KAFKA_" + key.upper().replace(".", "_")] == value, (name, key)
