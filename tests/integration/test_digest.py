"""Digests over a real broker to a real SMTP server (aiosmtpd): once per manager and week.

Two digest replicas run side by side and one is restarted; every manager still gets
exactly one e-mail. The numbers in it are checked against /metrics.
"""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi.testclient import TestClient

from services.feedback.api import create as create_feedback
from services.metrics.api import create as create_metrics
from services.recognition.api import create as create_recognition
from shared.auth import ensure_dev_key
from shared.broker import free_port
from shared.settings import DEFAULT_DIMENSIONS, Settings
from tests.conftest import wait_until
from tests.e2e.test_stack import parse

LAST_WEEK = datetime.now(UTC) - timedelta(days=7)


def person(pid: str, team: str, manager: str | None, email_: str | None = None) -> dict[str, Any]:
    return {"id": pid, "name": f"{pid.title()} Person", "email": email_ or f"{pid}@x.io",
            "team_id": team, "manager_id": manager}  # fmt: skip


PEOPLE = [
    person("lee", "alpha", None),
    *[person(p, "alpha", "lee") for p in ("ann", "bob", "cat", "dan", "eve", "fin")],
    person("bo", "beta", None),
    *[person(p, "beta", "bo") for p in ("gus", "hal")],
    person("rex", "gamma", None, "refuse@x.io"),  # the SMTP server refuses this one
    person("ivy", "gamma", "rex"),
    person("fay", "delta", None, "flaky@x.io"),  # this one is refused once, then accepted
    person("joe", "delta", "fay"),
]


class Mailbox:
    """A real SMTP server's handler: refuses refuse@, defers flaky@ once, keeps the rest."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refused = 0
        self.deferred = 0
        self._lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self._lock:
            if address == "refuse@x.io":
                self.refused += 1
                return "550 5.1.1 mailbox unavailable"
            if address == "flaky@x.io" and self.deferred == 0:
                self.deferred += 1
                return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = email.message_from_bytes(
            envelope.original_content or b"", policy=email.policy.default
        )
        assert isinstance(message, EmailMessage)
        with self._lock:
            self.messages.append(message)
        return "250 accepted"

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if address in str(m["To"])]


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def seed(settings: Settings) -> dict[str, str]:
    """Last week's kudos and survey answers, through the public APIs."""
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    when = LAST_WEEK.isoformat()
    with TestClient(create_recognition(settings), headers=headers) as http:
        assert http.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
        for i, (giver, recipient, value) in enumerate(
            [("bob", "ann", "growth"), ("cat", "ann", "direction"), ("ivy", "bob", "growth"),
             ("ann", "cat", "wellbeing"), ("gus", "hal", "growth")]
        ):  # fmt: skip
            body = {"giver_id": giver, "recipient_ids": [recipient], "message": "thanks",
                    "values": [value], "occurred_at": when, "event_id": f"k{i}"}  # fmt: skip
            assert http.post("/v1/recognitions", json=body).status_code == 202
    with TestClient(create_feedback(settings), headers=headers) as http:
        respondents = ["ann", "bob", "cat", "dan", "eve", "gus", "hal", "bo"]
        for n, who in enumerate(respondents):
            answers = {d: 2 + (n + i) % 4 for i, d in enumerate(DEFAULT_DIMENSIONS)}
            body = {"survey_id": "s1", "respondent_id": who, "answers": answers,
                    "enps": 6 + n % 5, "submitted_at": when}  # fmt: skip
            assert http.post("/v1/survey-responses", json=body).status_code == 202
    return headers


def test_each_manager_gets_one_digest_whose_numbers_match_metrics(
    settings: Settings,
    env: dict[str, str],
    spawn: Callable[..., Popen[bytes]],
    mailbox: tuple[Mailbox, int],
    tmp_path: Path,
) -> None:
    box, smtp_port = mailbox
    headers = seed(settings)
    spawn("aggregator", log=tmp_path / "aggregator.log")
    with TestClient(create_metrics(settings)) as metrics:

        def figures() -> dict[str, float] | None:
            samples = parse(metrics.get("/metrics").text)
            trust = 'rapport_trust_index{team="alpha",window="28d"}' in samples
            kudos = 'rapport_recognitions_total{team="beta",value="growth"}' in samples
            return samples if trust and kudos else None

        samples = wait_until(figures, timeout=60)
    digest_env = {"RAPPORT_SMTP_HOST": "127.0.0.1", "RAPPORT_SMTP_PORT": str(smtp_port),
                  "RAPPORT_DIGEST_CHECK_S": "0.5", "RAPPORT_DIGEST_HOUR": "0",
                  "RAPPORT_DIGEST_BACKOFF_S": "0.2"}  # fmt: skip  # due from Monday 00:00
    ports = [free_port(), free_port()]
    replicas = [
        spawn("digest", log=tmp_path / f"digest{i}.log",
              extra_env={**digest_env, "RAPPORT_DIGEST_PORT": str(port)})
        for i, port in enumerate(ports)
    ]  # fmt: skip
    wait_until(lambda: all(box.to(f"{m}@x.io") for m in ("lee", "bo")) and box.to("flaky@"),
               timeout=60)  # fmt: skip
    wait_until(lambda: box.refused >= 1)

    lee = box.to("lee@x.io")[0]
    text = plain(lee)
    alpha = {k: v for k, v in samples.items() if 'team="alpha"' in k}
    received = sum(v for k, v in alpha.items() if k.startswith("rapport_recognitions_total"))
    assert f"Recognitions received: {received:.0f}\n" in text  # ann 2, bob 1, cat 1
    index = alpha['rapport_trust_index{team="alpha",window="28d"}']
    assert f"Trust index: {index:.0f}/100" in text
    participation = alpha['rapport_trust_participation_ratio{team="alpha",window="28d"}']
    assert f"Participation: {100 * participation:.0f}%" in text
    assert "No recognition in 14+ days: Dan Person, Eve Person, Fin Person." in text
    assert "Ivy" not in text and "Gus" not in text  # nobody from another team
    bo = plain(box.to("bo@x.io")[0])
    assert "Not enough survey answers yet" in bo and "Trust index" not in bo  # 3 of k=5

    for proc in replicas:  # a restart must not send anything again
        proc.terminate()
        proc.wait(timeout=15)
    sent = len(box.messages)
    spawn("digest", extra_env={**digest_env, "RAPPORT_DIGEST_PORT": str(ports[0])})
    url = f"http://127.0.0.1:{ports[0]}"
    wait_until(lambda: _rounds(url) >= 3, timeout=30)  # three rounds found nothing due
    assert len(box.messages) == sent == 3  # lee, bo, fay: once each, two replicas or not
    assert box.refused == 1  # a permanent failure is not retried by the schedule...

    week = re.search(r"\d{4}-W\d{2}", str(lee["Subject"]))
    assert week is not None
    run = httpx.post(f"{url}/v1/digests/run", params={"week": week[0]}, headers=headers)
    assert run.status_code == 200, run.text
    outcomes = run.json()["outcomes"]
    assert outcomes == {"bo": "already_sent", "fay": "already_sent", "lee": "already_sent",
                        "rex": "failed"}  # fmt: skip  # ...but an admin's run tries it again
    assert box.refused == 2 and len(box.messages) == 3
    logs = "".join(p.read_text() for p in tmp_path.glob("digest*.log"))
    assert re.search(r"digest rex/\d{4}-W\d{2} not delivered: refused", logs)
    assert "digest lee/" in logs and "sent to Lee Person <lee@x.io>" in logs
    after = parse(httpx.get(f"{url}/metrics").text)
    assert after['rapport_digest_failures_total{reason="refused"}'] == 1.0
    preview = httpx.get(f"{url}/v1/digests/lee/preview", params={"week": week[0]},
                        headers=headers)  # fmt: skip
    assert preview.status_code == 200 and f"{index:.0f}</b>/100" in preview.text


def plain(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")  # SMTP lines end in CRLF


def _rounds(url: str) -> float:
    try:
        samples = parse(httpx.get(f"{url}/metrics", timeout=2).text)
    except httpx.HTTPError:
        return 0
    return samples.get("rapport_digest_schedule_rounds_total", 0)
