"""The whole stack from `rapport run`: kudos and survey answers over HTTP, exact on /metrics."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support import wait_until
from tests.support.metrics import parse
from tests.support.people import as_json, person, team

# Two teams of k = 5: a smaller one would have no figure at all (tests/unit/test_privacy.py).
PEOPLE = as_json([*team("alpha", "lead", ["ann", "bob", "dan", "eve"]),
                  *(person(p, "beta") for p in ("cid", "fay", "gus", "hal", "ivy"))])  # fmt: skip
KUDOS = [
    {"giver_id": "bob", "recipient_ids": ["ann"], "values": ["growth"]},
    {"giver_id": "lead", "recipient_ids": ["ann"], "values": ["growth", "direction"]},
    {"giver_id": "ann", "recipient_ids": ["cid"], "values": ["partnership"]},
]
# Hand-computed from the three kudos above (alpha and beta have 5 members each).
EXPECTED = {
    'rapport_recognitions_total{team="alpha",value="growth"}': 2.0,
    'rapport_recognitions_total{team="alpha",value="direction"}': 1.0,
    'rapport_recognitions_total{team="beta",value="partnership"}': 1.0,
    'rapport_team_active_members{team="alpha"}': 5.0,
    'rapport_recognition_coverage_ratio{team="alpha",window="7d"}': 1 / 5,  # ann
    'rapport_recognition_coverage_ratio{team="beta",window="28d"}': 1 / 5,  # cid
    'rapport_recognition_givers_ratio{team="alpha",window="7d"}': 3 / 5,  # bob, lead, ann
    'rapport_recognition_givers_ratio{team="beta",window="7d"}': 0.0,
    'rapport_recognition_cross_team_ratio{team="alpha",window="7d"}': 0.0,
    'rapport_recognition_cross_team_ratio{team="beta",window="7d"}': 1.0,
    'rapport_recognition_downward_ratio{team="alpha",window="7d"}': 0.5,
    'rapport_recognition_unrecognized_people{team="alpha"}': 4.0,
    # Connections: alpha's links are bob-ann, lead-ann (inside) and ann-cid (to beta).
    'rapport_connection_breadth_teams{team="alpha",window="7d"}': 1.0,
    'rapport_connection_breadth_teams{team="beta",window="28d"}': 1.0,
    'rapport_connection_reciprocity_ratio{team="alpha",window="7d"}': 0.0,  # none thanked back
    'rapport_connection_isolated_people{team="alpha",window="28d"}': 2.0,  # dan, eve
    'rapport_connection_leader_ratio{team="alpha",window="7d"}': 0.25,  # lead thanked ann only
    'rapport_connection_concentration_ratio{team="alpha",window="28d"}': 1.0,  # all via ann
    'rapport_gaming_trading_pairs{team="alpha",window="28d"}': 0.0,
    'rapport_gaming_rings{team="beta",window="7d"}': 0.0,
    'rapport_gaming_bursts{team="alpha",window="7d"}': 0.0,
}


def test_kudos_posted_over_http_show_up_exactly_on_metrics(stack: dict[str, str]) -> None:
    api = f"http://127.0.0.1:{stack['RAPPORT_RECOGNITION_PORT']}"
    metrics = f"http://127.0.0.1:{stack['RAPPORT_METRICS_PORT']}/metrics"
    key_file = Path(stack["RAPPORT_VAR_DIR"]) / "dev-api-key"
    wait_until(lambda: _ok(f"{api}/readyz") and key_file.exists(), timeout=60)
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    with httpx.Client(base_url=api, headers=headers) as client:
        assert client.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
        for i, k in enumerate(KUDOS):
            r = client.post(
                "/v1/recognitions", json={**k, "message": "thanks", "event_id": f"e{i}"}
            )
            assert r.status_code == 202, r.text
        # A retry of the first one must not count twice.
        first = {**KUDOS[0], "message": "thanks", "event_id": "e0"}
        assert client.post("/v1/recognitions", json=first).status_code == 202

    def exact() -> dict[str, float] | None:
        try:
            samples = parse(httpx.get(metrics).text)
        except httpx.HTTPError:
            return None
        got = {k: samples.get(k) for k in EXPECTED}
        return samples if got == pytest.approx(EXPECTED) else None

    samples = wait_until(exact, timeout=60)
    assert not any(p in name for name in samples for p in ('"ann"', '"lead@x.io"', "Ann"))
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=httpx.get(metrics).content, capture_output=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_closed_round_of_k_answers_over_http_shows_up_exact(
    stack: dict[str, str],
) -> None:
    api = f"http://127.0.0.1:{stack['RAPPORT_RECOGNITION_PORT']}"
    feedback = f"http://127.0.0.1:{stack['RAPPORT_FEEDBACK_PORT']}"
    metrics = f"http://127.0.0.1:{stack['RAPPORT_METRICS_PORT']}/metrics"
    key_file = Path(stack["RAPPORT_VAR_DIR"]) / "dev-api-key"
    wait_until(lambda: _ok(f"{api}/readyz") and _ok(f"{feedback}/readyz") and key_file.exists(),
               timeout=60)  # fmt: skip
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    team = [{"id": f"g{i}", "name": f"G {i}", "email": f"g{i}@x.io", "team_id": "gamma",
             "manager_id": "g0" if i else None} for i in range(6)]  # fmt: skip
    with httpx.Client(headers=headers) as client:
        assert client.post(f"{api}/v1/people/batch", json={"people": team}).status_code == 202
        items = [i["id"] for i in client.get(f"{feedback}/v1/questions").json()["items"]]
        opened = client.post(f"{feedback}/v1/survey-rounds", json={"survey_id": "q4"})
        assert opened.status_code == 202, opened.text
        for i in range(1, 6):  # five reports answer: 4 everywhere but growth, eNPS 10 or 6
            answers = {item: 2 if item == "growth" else 4 for item in items}
            body = {"survey_id": "q4", "respondent_id": f"g{i}", "answers": answers,
                    "enps": 10 if i <= 3 else 6}  # fmt: skip
            r = client.post(f"{feedback}/v1/survey-responses", json=body)
            assert r.status_code == 202, r.text
        prediction = {"survey_id": "q4", "leader_id": "g0", "predicted": {"growth": 4}}
        assert client.post(f"{feedback}/v1/self-assessments", json=prediction).status_code == 202
        assert client.post(f"{feedback}/v1/survey-rounds/q4/close").status_code == 202
    # Hand-computed: 6 of 7 dimensions all favorable, growth none -> 100 x 6/7.
    expected = {
        'rapport_trust_index{team="gamma",window="28d"}': 600 / 7,
        'rapport_trust_enps{team="gamma",window="7d"}': 100 * (3 - 2) / 5,
        'rapport_trust_participation_ratio{team="gamma",window="28d"}': 5 / 6,
        'rapport_trust_score{dimension="growth",team="gamma",window="28d"}': 2.0,
        'rapport_trust_perception_gap{dimension="growth",team="gamma",window="28d"}': 2.0,
    }

    def exact() -> bool:
        try:
            samples = parse(httpx.get(metrics).text)
        except httpx.HTTPError:
            return False
        return {k: samples.get(k) for k in expected} == pytest.approx(expected)

    wait_until(exact, timeout=60)


@pytest.mark.demo
def test_make_run_seeds_a_demo_org_with_meaningful_numbers(stack: dict[str, str]) -> None:
    metrics = f"http://127.0.0.1:{stack['RAPPORT_METRICS_PORT']}/metrics"

    def seeded() -> dict[str, float] | None:
        try:
            samples = parse(httpx.get(metrics).text)
        except httpx.HTTPError:
            return None
        members = [k for k in samples if k.startswith("rapport_team_active_members")]
        totals = [k for k in samples if k.startswith("rapport_recognitions_total")]
        trust = [k for k in samples if k.startswith("rapport_trust_index") and "28d" in k]
        return samples if len(members) == 7 and len(totals) >= 35 and len(trust) == 7 else None

    samples = wait_until(seeded, timeout=90)
    coverage = [v for k, v in samples.items() if k.startswith("rapport_recognition_coverage")]
    assert max(coverage) > 0 and min(coverage) < 1  # some recognized, not everyone
    unrecognized = sum(
        v for k, v in samples.items() if k.startswith("rapport_recognition_unrecognized")
    )
    assert unrecognized > 0  # skewed: some people get none
    cross = [v for k, v in samples.items() if k.startswith("rapport_recognition_cross_team")]
    assert max(cross) > 0
    gini = [v for k, v in samples.items() if k.startswith("rapport_recognition_gini")]
    assert max(gini) > 0.3  # a few people get a lot
    # Connections (computed a moment after the other figures, in a thread of their own):
    # the silo team, the isolated people and the trading pair of the demo.
    trading = 'rapport_gaming_trading_pairs{team="support",window="28d"}'
    samples = wait_until(lambda: (s := parse(httpx.get(metrics).text)).get(trading) and s)
    breadth = {k: v for k, v in samples.items()
               if k.startswith("rapport_connection_breadth") and 'window="28d"' in k}  # fmt: skip
    assert breadth['rapport_connection_breadth_teams{team="sales",window="28d"}'] == 0
    assert min(v for k, v in breadth.items() if "sales" not in k) > 0
    isolated = [v for k, v in samples.items()
                if k.startswith("rapport_connection_isolated") and 'window="28d"' in k]  # fmt: skip
    assert sum(isolated) >= 3
    assert samples[trading] == 1
    assert sum(v for k, v in samples.items() if k.startswith("rapport_gaming_trading")) == 1
    assert sum(v for k, v in samples.items() if k.startswith("rapport_team_active")) == 56
    # The three- and two-person teams have no figure of any kind (five people together:
    # no other team is hidden to protect them).
    assert not [k for k in samples if 'team="legal"' in k or 'team="finance"' in k]
    index = [v for k, v in samples.items() if k.startswith("rapport_trust_index")]
    assert 20 < min(index) < max(index) < 95  # teams differ, none perfect
    gaps = [v for k, v in samples.items() if k.startswith("rapport_trust_perception_gap")]
    assert sum(g > 0 for g in gaps) > 2 * sum(g < 0 for g in gaps)  # leaders mostly overrate

    # Digests for the ten managers land in var/outbox through the local SMTP sink.
    outbox = Path(stack["RAPPORT_VAR_DIR"]) / "outbox"
    files = wait_until(lambda: len(list(outbox.glob("*.eml"))) == 10 and list(outbox.glob("*")))
    digests = {}
    for f in files:
        message = email.message_from_bytes(f.read_bytes(), policy=email.policy.default)
        body = message.get_body(("plain",))
        assert body is not None and message.get_body(("html",)) is not None
        digests[str(message["To"])] = (str(message["Subject"]), body.get_content())
    small = [(subject, text) for subject, text in digests.values()
             if subject.startswith(("legal,", "finance,"))]  # fmt: skip
    assert len(small) == 2
    for subject, text in small:
        assert subject.endswith(": your weekly digest")
        assert "Team figures appear for teams of at least 5" in text
        assert "Trust index" not in text and "Recognitions received" not in text
    others = [text for subject, text in digests.values()
              if not subject.startswith(("legal,", "finance,"))]  # fmt: skip
    assert len(others) == 8 and all("Trust index" in t for t in others)


def children_of_this_run(var_dir: str, command: str) -> list[int]:
    """Pids of `rapport <command>` processes started by this test's `rapport run` (their
    environment names its var dir), not the supervisors that restart them."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue  # not a process, or gone
        if (cmdline[-2:] == [command.encode(), b""] and b"services.supervise" not in cmdline
                and f"RAPPORT_VAR_DIR={var_dir}".encode() in environ):  # fmt: skip
            pids.append(int(proc.name))
    return pids


def test_a_killed_worker_and_service_come_back_and_totals_stay_exact(
    stack: dict[str, str],
) -> None:
    api = f"http://127.0.0.1:{stack['RAPPORT_RECOGNITION_PORT']}"
    metrics = f"http://127.0.0.1:{stack['RAPPORT_METRICS_PORT']}/metrics"
    key_file = Path(stack["RAPPORT_VAR_DIR"]) / "dev-api-key"
    wait_until(lambda: _ok(f"{api}/readyz") and key_file.exists(), timeout=60)
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    growth = 'rapport_recognitions_total{team="alpha",value="growth"}'

    def post(n: int) -> None:
        body = {"giver_id": "bob", "recipient_ids": ["ann"], "values": ["growth"],
                "message": "thanks", "event_id": f"k{n}"}  # fmt: skip
        with httpx.Client(base_url=api, headers=headers) as client:
            assert client.post("/v1/recognitions", json=body).status_code == 202

    def counted(n: float) -> bool:
        try:
            return parse(httpx.get(metrics).text).get(growth) == n
        except httpx.HTTPError:
            return False

    with httpx.Client(base_url=api, headers=headers) as client:
        assert client.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
    for n in range(5):
        post(n)
    wait_until(lambda: counted(5), timeout=60)
    victims = {c: children_of_this_run(stack["RAPPORT_VAR_DIR"], c)
               for c in ("aggregator", "recognition")}  # fmt: skip
    assert all(len(pids) == 1 for pids in victims.values()), victims
    for [pid] in victims.values():
        os.kill(pid, signal.SIGKILL)
    # Both come back as new processes, the broker and the rest untouched.
    for command, [old] in victims.items():
        wait_until(lambda c=command, o=old: children_of_this_run(stack["RAPPORT_VAR_DIR"], c)
                   not in ([], [o]), timeout=30)  # fmt: skip
    wait_until(lambda: _ok(f"{api}/readyz"), timeout=60)
    for n in range(3, 10):  # 3 and 4 again: a client's retries, counted once
        post(n)
    wait_until(lambda: counted(10), timeout=90)
    time.sleep(2)  # and nothing more comes
    assert counted(10)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
