"""A real Prometheus scrapes `make run` with demo data, using the project's own rules.

Every dashboard panel query, every template variable and every recording rule must
return data: a panel that shows "No data" on a working platform is a broken panel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from shared.infra.broker import free_port
from tests.support import ROOT, wait_until

DEPLOY = ROOT / "deploy"
JOBS = {
    "rapport-recognition": "RAPPORT_RECOGNITION_PORT",
    "rapport-feedback": "RAPPORT_FEEDBACK_PORT",
    "rapport-metrics": "RAPPORT_METRICS_PORT",
    "rapport-digest": "RAPPORT_DIGEST_PORT",
    "rapport-aggregator": "RAPPORT_AGGREGATOR_METRICS_PORT",
}
VARIABLES = {"$team": ".*", "$window": "28d"}


@pytest.fixture
def prometheus(stack: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Prometheus (Debian's package) scraping every service of the stack each second."""
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: `make test` installs Debian's prometheus package"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml"))],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{stack[port]}"]}]}
            for job, port in JOBS.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _get(f"{url}/-/ready") == 200, timeout=60)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def queries() -> dict[str, str]:
    """Every panel query (variables filled in) and every recording rule, by where it is."""
    found = {}
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in VARIABLES.items():
                    expr = expr.replace(name, value)
                found[f"{path.stem}: {panel['title']} [{target['refId']}]"] = expr
    for path in sorted((DEPLOY / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    found[f"recording rule {rule['record']}"] = rule["record"]
    return found


@pytest.mark.demo
def test_every_panel_query_and_recording_rule_returns_data(prometheus: str) -> None:
    pending = queries()
    assert len(pending) >= 30
    deadline = time.monotonic() + 150
    while pending and time.monotonic() < deadline:
        for where, expr in list(pending.items()):
            answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}).json()
            assert answer["status"] == "success", (where, answer)
            if answer["data"]["result"]:
                del pending[where]
        time.sleep(2)
    assert not pending, f"no data for: {json.dumps(pending, indent=1)}"
    teams = httpx.get(
        f"{prometheus}/api/v1/label/team/values", params={"match[]": "rapport_team_active_members"}
    ).json()["data"]
    assert len(teams) == 7  # the $team variable's query: no team below k
