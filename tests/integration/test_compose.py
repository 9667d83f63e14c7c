"""docker-compose.yml is valid for Compose and has the production shape the README promises."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

SECRETS = {"RAPPORT_API_KEYS": "[]", "RAPPORT_PSEUDONYM_KEY": "k" * 32,
           "GRAFANA_ADMIN_PASSWORD": "secret"}  # fmt: skip


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
    done = compose_config({k: v for k, v in SECRETS.items() if k != "RAPPORT_PSEUDONYM_KEY"})
    assert done.returncode != 0
    assert "set RAPPORT_PSEUDONYM_KEY in .env" in done.stderr


def test_every_part_of_the_platform_is_there(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == {"kafka", "topics", "recognition", "feedback", "aggregator",
                             "metrics", "digest", "mailpit", "prometheus", "grafana"}  # fmt: skip
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "broker,controller" in str(services["kafka"]["environment"])  # KRaft, no ZooKeeper
    assert any("kafka-data" in str(v) for v in services["kafka"]["volumes"])
    assert services["aggregator"]["deploy"]["replicas"] == 2
    for name in ("recognition", "feedback", "metrics", "digest"):
        assert "readyz" in str(services[name]["healthcheck"]["test"]), name
        assert services[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    mounts = str(services["prometheus"]["volumes"]) + str(services["grafana"]["volumes"])
    for path in ("deploy/prometheus/rules", "deploy/grafana/provisioning",
                 "deploy/grafana/dashboards"):  # fmt: skip
        assert path in mounts, path


def test_one_image_for_all_services_running_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.count("\nFROM ") + dockerfile.startswith("FROM ") >= 2  # multi-stage
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user and user[-1] not in ("root", "0")
