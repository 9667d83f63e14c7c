"""A dependency that is down: every route that needs it answers 503 with Retry-After,
naming what is missing, within 5 seconds; never a 500, never a hang. One test per kind of
route (the broker for writes, the directory, rounds and snapshot views, SMTP), on both
brokers, the broker stopped under running services."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.digest.api import create as create_digest
from services.digest.settings import DigestSettings
from services.feedback.api import create as create_feedback
from services.metrics.api import create as create_metrics
from services.recognition.api import create as create_recognition
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port
from shared.infra.settings import Settings
from tests.support.brokers import Broker
from tests.support.people import as_json, team

pytestmark = pytest.mark.own_broker  # each test stops its broker
WITHIN_S = 5.0
PEOPLE = as_json(team("t1", "p0", [f"p{i}" for i in range(1, 6)]))
KUDOS = {"giver_id": "p1", "recipient_ids": ["p2"], "message": "Thanks!", "values": ["growth"]}
ANSWERS = {"direction": 4, "empowerment": 4, "appreciation": 4, "growth": 4,
           "transparency": 4, "partnership": 4, "wellbeing": 4}  # fmt: skip


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[[Callable[[Settings], FastAPI]], TestClient]]:
    """Start services in-process with the dev key; the directory seeded first."""
    key = ensure_dev_key(settings)
    started: list[TestClient] = []

    def start(create: Callable[[Settings], FastAPI]) -> TestClient:
        client = TestClient(create(settings), headers={"Authorization": f"Bearer {key}"})
        started.append(client.__enter__())
        return client

    directory = start(create_recognition)
    assert directory.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
    yield start
    for client in reversed(started):
        client.__exit__(None, None, None)


def unavailable(call: Callable[[], httpx.Response], *missing: str) -> dict[str, Any]:
    """Call; assert a quick 503 with Retry-After naming one of ``missing``."""
    asked = time.monotonic()
    answer = call()
    took = time.monotonic() - asked
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"].isdigit()
    assert took < WITHIN_S, f"answered in {took:.1f} s"
    body: dict[str, Any] = answer.json()
    if missing:
        assert body["error"] in missing, body
    return body


def test_recognition_routes_without_a_broker(serve: Any, broker: Broker) -> None:
    api = serve(create_recognition)
    assert api.post("/v1/recognitions", json=KUDOS).status_code == 202
    broker.stop()
    unavailable(lambda: api.post("/v1/recognitions", json=KUDOS), "broker_unavailable")
    # A person this replica has not seen: the directory view cannot catch up.
    unseen = {**KUDOS, "recipient_ids": ["newcomer"]}
    unavailable(lambda: api.post("/v1/recognitions", json=unseen), "broker_unavailable")
    unavailable(lambda: api.delete("/v1/people/newcomer"), "broker_unavailable")
    unavailable(lambda: api.put("/v1/people/p9", json={**PEOPLE[1], "id": "p9"}),
                "broker_unavailable")  # fmt: skip
    assert unavailable(lambda: api.get("/readyz")) == {"ready": False}
    assert api.get("/healthz").status_code == 200


def test_feedback_routes_without_a_broker(serve: Any, broker: Broker) -> None:
    api = serve(create_feedback)
    assert api.post("/v1/survey-rounds", json={"survey_id": "r1"}).status_code == 202
    broker.stop()
    answer = {"survey_id": "r1", "respondent_id": "p1", "answers": ANSWERS}
    unavailable(lambda: api.post("/v1/survey-responses", json=answer), "broker_unavailable")
    unknown = {**answer, "survey_id": "r2"}  # the rounds view must catch up first
    unavailable(lambda: api.post("/v1/survey-responses", json=unknown), "broker_unavailable")
    unavailable(lambda: api.post("/v1/survey-rounds", json={"survey_id": "r3"}),
                "broker_unavailable")  # fmt: skip
    unavailable(lambda: api.post("/v1/survey-rounds/r1/close"), "broker_unavailable")
    unavailable(lambda: api.get("/v1/survey-rounds"), "broker_unavailable")
    assert unavailable(lambda: api.get("/readyz")) == {"ready": False}


def test_metrics_readiness_without_a_broker(serve: Any, broker: Broker) -> None:
    api = serve(create_metrics)
    deadline = time.monotonic() + 30
    while api.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    broker.stop()
    assert unavailable(lambda: api.get("/readyz")) == {"ready": False}
    assert api.get("/metrics").status_code == 200  # the figures it holds, still served


def test_digest_routes_without_a_broker_or_a_mail_server(
    serve: Any, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mail server that is not there: nothing listens on its port.
    monkeypatch.setenv("RAPPORT_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("RAPPORT_SMTP_PORT", str(free_port()))
    api = serve(lambda _: create_digest(DigestSettings()))
    body = unavailable(lambda: api.post("/v1/digests/run?week=2026-W40"), "smtp_unavailable")
    assert "SMTP server" in body["message"]
    broker.stop()
    unavailable(lambda: api.get("/v1/digests/p0/preview?week=2026-W40"),
                "broker_unavailable", "not_ready")  # fmt: skip
    unavailable(lambda: api.post("/v1/digests/run?week=2026-W40"),
                "broker_unavailable", "not_ready")  # fmt: skip
    assert unavailable(lambda: api.get("/readyz")) == {"ready": False}
