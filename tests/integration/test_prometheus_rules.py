"""Prometheus rules and config pass promtool's checks and the rules' own unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: `make test` installs Debian's prometheus package"
    done = subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_rules_pass_promtool_check() -> None:
    out = promtool("check", "rules", *sorted(str(p) for p in (PROMETHEUS / "rules").glob("*.yml")))
    assert out.count("SUCCESS") == 2


def test_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "tests/rules_test.yml")


def test_the_compose_scrape_config_is_valid(tmp_path: Path) -> None:
    # The config names the rules where the compose file mounts them; check it with them.
    config = (PROMETHEUS / "prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/rules/", str(PROMETHEUS / "rules") + "/")
    )
    out = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert "SUCCESS" in out


def test_every_alert_is_covered_by_a_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "rules" / "alerts.yml").read_text())
    tests = (PROMETHEUS / "tests" / "rules_test.yml").read_text()
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert len(alerts) == 8
    assert [a for a in alerts if f"alertname: {a}" not in tests] == []
