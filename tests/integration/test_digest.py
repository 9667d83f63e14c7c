"""Digests over a real broker to a real SMTP server (aiosmtpd): once per manager and week.

Two digest replicas run side by side and one is restarted; every manager still gets
exactly one e-mail. The numbers in it are checked against /metrics.
"""

from __future__ import annotations

import asyncio
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

from services.digest import service
from services.digest.api import create as create_digest
from services.digest.settings import DigestSettings
from services.feedback.api import create as create_feedback
from services.metrics.api import create as create_metrics
from services.recognition.api import create as create_recognition
from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import TEAM_SNAPSHOT, DimensionSums, TeamSnapshot, TeamTrust, TrustBlock
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port
from shared.infra.kafka import Publisher, Record
from shared.infra.settings import DEFAULT_DIMENSIONS, Settings
from tests.support import wait_until
from tests.support.metrics import parse
from tests.support.people import as_json, person, team

LAST_WEEK = datetime.now(UTC) - timedelta(days=7)


PEOPLE = as_json([
    *team("alpha", "lee", ["ann", "bob", "cat", "dan", "eve", "fin"]),
    *team("beta", "bo", ["gus", "hal"]),
    person("rex", "gamma", email="refuse@x.io"),  # the SMTP server refuses this one
    person("ivy", "gamma", "rex"),
    person("fay", "delta", email="flaky@x.io"),  # this one is refused once, then accepted
    person("joe", "delta", "fay"),
])  # fmt: skip


class Mailbox:
    """A real SMTP server's handler: refuses refuse@, defers flaky@ once, keeps the rest."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[list[str]] = []  # each message's SMTP recipients
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
            self.envelopes.append(list(envelope.rcpt_tos))
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
        assert http.post("/v1/survey-rounds", json={"survey_id": "s1"}).status_code == 202
        respondents = ["ann", "bob", "cat", "dan", "eve", "gus", "hal", "bo"]
        for n, who in enumerate(respondents):
            answers = {d: 2 + (n + i) % 4 for i, d in enumerate(DEFAULT_DIMENSIONS)}
            body = {"survey_id": "s1", "respondent_id": who, "answers": answers,
                    "enps": 6 + n % 5, "submitted_at": when}  # fmt: skip
            assert http.post("/v1/survey-responses", json=body).status_code == 202
        assert http.post("/v1/survey-rounds/s1/close").status_code == 202
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
        wait_until(lambda: metrics.get("/readyz").status_code == 200, timeout=60)  # caught up

        def figures() -> dict[str, float] | None:
            samples = parse(metrics.get("/metrics").text)
            trust = 'rapport_trust_index{team="alpha",window="28d"}' in samples
            alpha = 'rapport_recognitions_total{team="alpha"'
            kudos = sum(v for k, v in samples.items() if k.startswith(alpha)) == 4
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
    # Beta has three people (k = 5): their names to their manager, no team figure.
    assert "Team figures appear for teams of at least 5 active members" in bo
    assert "Trust index" not in bo and "Recognitions received" not in bo
    assert not [k for k in samples if 'team="beta"' in k]

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
    assert re.search(r"digest lee/\d{4}-W\d{2} sent", logs)
    assert "Lee Person" not in logs and "lee@x.io" not in logs  # whom to is not for the log
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


ODD = as_json(
    [
        # A name with a comma, reports in another team than the manager's own.
        person("mo", "mgmt", name="Reyes, Morgan"),
        *[person(p, "ops", "mo") for p in ("op1", "op2")],
        # Names that try to add recipients or headers, or say nothing.
        person("nl", "nlt", name="Nl\r\nBcc: evil@out.com"),
        person("nl1", "nlt", "nl"),
        person("qt", "q", name='x" <evil@out.com>, "y'),
        person("qt1", "q", "qt"),
        *[person(p, "q2", "qt") for p in ("qt2", "qt3")],  # most of qt's reports: team q2
        person("bl", "b", name=" "),
        person("bl1", "b", "bl"),
        # Reports split evenly: the manager's own team if it is one of them, else the first.
        person("own", "o"),
        person("own1", "o", "own"),
        person("own2", "p", "own"),
        person("tie", "t1"),
        person("tie1", "t3", "tie"),
        person("tie2", "t2", "tie"),
        # A team whose snapshot breaks the digest (a block without answers); of k = 5, so
        # that its figures are read at all.
        *team("broken", "br", ["br1", "br2", "br3", "br4"]),
        person("loner", "solo"),  # no reports: no digest
    ]
)


def broken_snapshot() -> Record:
    block = TrustBlock(at=LAST_WEEK, respondents=5,
                       dimensions={"growth": DimensionSums(total=0, favorable=0, n=0)})  # fmt: skip
    snapshot = TeamSnapshot(team_id="broken", generated_at=LAST_WEEK,
                            trust=TeamTrust(blocks=(block,)))  # fmt: skip
    data = snapshot.model_dump(mode="json")
    return Record.of(
        topics.SNAPSHOTS, "broken", CloudEvent("x", "/t", TEAM_SNAPSHOT, LAST_WEEK, data)
    )


async def publish(settings: Settings, records: list[Record]) -> None:
    publisher = Publisher(settings)
    await publisher.start()
    try:
        await publisher.publish(records)
    finally:
        await publisher.stop()


def test_a_digest_goes_to_one_address_whatever_the_name_and_one_failure_stops_no_one(
    settings: Settings, mailbox: tuple[Mailbox, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    box, smtp_port = mailbox
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as http:
        assert http.post("/v1/people/batch", json={"people": ODD}).status_code == 202
    asyncio.run(publish(settings, [broken_snapshot()]))
    for name, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
                        "DIGEST_CHECK_S": "3600", "DIGEST_ATTEMPTS": "1"}.items():  # fmt: skip
        monkeypatch.setenv(f"RAPPORT_{name}", value)
    week = service.week_label(LAST_WEEK.date())
    with TestClient(create_digest(DigestSettings()), headers=headers) as digest:
        run = digest.post("/v1/digests/run", params={"week": week})
        assert run.status_code == 200, run.text
        outcomes = run.json()["outcomes"]
        managers = {"mo", "nl", "qt", "bl", "own", "tie", "br"}
        assert outcomes == {m: "failed" if m == "br" else "sent" for m in managers}
        again = digest.post("/v1/digests/run", params={"week": week}).json()["outcomes"]
        assert again["br"] == "failed" and again["mo"] == "already_sent"  # not stuck claimed
        failures = parse(digest.get("/metrics").text)
        loner = digest.get("/v1/digests/loner/preview", params={"week": week})
    assert failures['rapport_digest_failures_total{reason="unbuildable"}'] == 2.0
    assert loner.status_code == 404 and "manages no active people" in loner.json()["message"]

    assert len(box.messages) == 6
    for message, envelope in zip(box.messages, box.envelopes, strict=True):
        [to] = message["To"].addresses  # one recipient in the header...
        assert envelope == [to.addr_spec]  # ...and in the envelope: the directory's address
        assert message["Bcc"] is None and message["Cc"] is None
    teams = {m["To"].addresses[0].username: str(m["Subject"]).split(",")[0] for m in box.messages}
    assert teams == {"mo": "ops", "nl": "nlt", "qt": "q2", "bl": "b", "own": "o", "tie": "t2"}
    names = {m["To"].addresses[0].username: m["To"].addresses[0].display_name
             for m in box.messages}  # fmt: skip
    assert names["mo"] == "Reyes, Morgan"
    assert names["nl"] == "Nl Bcc: evil@out.com"  # the line break gone, the text kept as text
    assert names["qt"] == 'x" <evil@out.com>, "y' and names["bl"] == ""
    assert "Hi there," in plain(next(m for m in box.messages if "bl@" in str(m["To"])))


@pytest.mark.parametrize(
    ("week", "reason"),
    [
        ("0001-W01", "before 2000-W01"),
        ("2026-W99", "not an ISO week"),
        ("2021-W53", "not an ISO week"),  # 2021 has 52
        (service.week_label(datetime.now(UTC).date()), "is not over yet"),
        ("9999-W52", "is not over yet"),
    ],
)
def test_a_digest_week_must_be_a_real_complete_iso_week(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, week: str, reason: str
) -> None:
    monkeypatch.setenv("RAPPORT_SMTP_PORT", str(free_port()))  # the development mail sink
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_digest(DigestSettings()), headers=headers) as digest:
        answers = [
            digest.post("/v1/digests/run", params={"week": week}),
            digest.get("/v1/digests/lee/preview", params={"week": week}),
        ]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == ["week"]
        assert reason in answer.json()["message"]
