"""The recognition service against a real broker: errors, auth, idempotency, 202 = acked."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from fastapi import APIRouter
from fastapi.testclient import TestClient

from services.recognition import api, slack
from services.recognition.api import create
from services.recognition.service import message_context
from services.recognition.settings import RecognitionSettings
from shared.contract import topics
from shared.contract.codec import decode
from shared.contract.events import DirectoryEntry
from shared.infra.auth import ensure_dev_key
from shared.infra.deps import create_writer_app
from shared.infra.fastpath import DirectRoute
from shared.infra.sealing import subjects_of, unseal
from shared.infra.settings import Settings
from shared.infra.subjects import SubjectKeys
from shared.readmodels.directory import DirectoryView
from tests.support.brokers import Broker
from tests.support.kafka import read_all
from tests.support.people import as_json, team

PEOPLE = as_json(team("t1", "p0", [f"p{i}" for i in range(1, 25)], timezone="Europe/Berlin"))
KUDOS = {"giver_id": "p1", "recipient_ids": ["p2"], "message": "Thanks!", "values": ["growth"]}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    key = ensure_dev_key(settings)
    with TestClient(create(settings), headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
        yield c


def recognitions(settings: Settings) -> list[dict[str, object]]:
    out = []
    for r in asyncio.run(read_all(settings, topics.RECOGNITION)):
        ce = decode(r.headers, r.value)
        out.append({"id": ce.id, "source": ce.source, "type": ce.type, **ce.data})
    return out


def test_accepted_recognition_is_on_the_topic(client: TestClient, settings: Settings) -> None:
    response = client.post("/v1/recognitions", json={**KUDOS, "event_id": "k-1"})
    assert response.status_code == 202
    assert response.json() == {"event_id": "k-1"}
    [record] = recognitions(settings)
    assert record["id"] == "k-1"
    assert record["source"] == "/rapport/recognition/dev"
    assert record["type"] == "rapport.recognition.given.v1"
    assert record["recipient_ids"] == ["p2"] and record["channel"] == "api"


def test_the_message_is_sealed_with_the_giver_and_every_recipient(
    client: TestClient, settings: Settings
) -> None:
    body = {**KUDOS, "recipient_ids": ["p2", "p3"], "message": "Thanks for the release!"}
    assert client.post("/v1/recognitions", json={**body, "event_id": "k-2"}).status_code == 202
    [raw] = asyncio.run(read_all(settings, topics.RECOGNITION))
    assert b"release" not in raw.value and "message" not in orjson.loads(raw.value)
    [record] = recognitions(settings)
    subjects: SubjectKeys = client.app.state.parts.subjects  # type: ignore[attr-defined]
    sealed = str(record["sealed_message"])
    assert set(subjects_of(sealed)) == {subjects.subject_of(p) for p in ("p1", "p2", "p3")}
    context = message_context("/rapport/recognition/dev", "k-2")
    assert unseal(sealed, subjects.key, context) == "Thanks for the release!"


def test_idempotency_key_gives_the_same_event_id(client: TestClient, settings: Settings) -> None:
    first = client.post("/v1/recognitions", json=KUDOS, headers={"Idempotency-Key": "abc"})
    again = client.post("/v1/recognitions", json=KUDOS, headers={"Idempotency-Key": "abc"})
    assert first.json() == again.json() == {"event_id": "abc"}
    assert {r["id"] for r in recognitions(settings)} == {"abc"}


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"recipient_ids": ["p1"]}, "recipient_ids", "self-recognition"),
        ({"recipient_ids": ["nobody"]}, "recipient_ids", "inactive person(s) ['nobody']"),
        ({"giver_id": "ghost"}, "giver_id", "unknown or inactive person 'ghost'"),
        ({"values": ["bravery"]}, "values", "unknown value(s) ['bravery']"),
        ({"message": ""}, "message", "at least 1 character"),
        ({"message": "x" * 2001}, "message", "at most 2000 characters"),
        ({"recipient_ids": [f"p{i}" for i in range(2, 23)]}, "recipient_ids", "at most 20"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"occurred_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}, "occurred_at",
         "must not be more than 5 minutes in the future"),
        ({"occurred_at": "1900-01-01T00:00:00Z"}, "occurred_at", "must not be more than 90 days"),
        ({"occurred_at": "0001-01-01T00:00:00+01:00"}, "occurred_at", "out of range"),
        ({"occurred_at": "9999-12-31T23:59:59-01:00"}, "occurred_at", "out of range"),
    ],
)  # fmt: skip
def test_invalid_input_is_a_clear_422_and_publishes_nothing(
    client: TestClient, settings: Settings, change: dict[str, object], field: str, reason: str
) -> None:
    response = client.post("/v1/recognitions", json={**KUDOS, **change})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_request"
    assert {"field": field, "reason": body["errors"][0]["reason"]} == body["errors"][0]
    assert reason in body["errors"][0]["reason"]
    assert recognitions(settings) == []


def test_batch_is_all_or_nothing(client: TestClient, settings: Settings) -> None:
    good = {"recognitions": [KUDOS, {**KUDOS, "giver_id": "p3"}]}
    response = client.post("/v1/recognitions/batch", json=good)
    assert response.status_code == 202 and len(response.json()["event_ids"]) == 2
    bad = {"recognitions": [KUDOS, {**KUDOS, "recipient_ids": ["nobody"]}]}
    response = client.post("/v1/recognitions/batch", json=bad)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "recognitions.1.recipient_ids"
    assert len(recognitions(settings)) == 2
    too_many = {"recognitions": [KUDOS] * 501}
    assert client.post("/v1/recognitions/batch", json=too_many).status_code == 422


def test_a_batch_lands_whole_keyed_by_event(client: TestClient, settings: Settings) -> None:
    batch = [{**KUDOS, "giver_id": f"p{1 + i % 20}", "recipient_ids": [f"p{21 + i % 4}"],
              "event_id": f"b-{i}"} for i in range(60)]  # fmt: skip
    assert client.post("/v1/recognitions/batch", json={"recognitions": batch}).status_code == 202
    records = asyncio.run(read_all(settings, topics.RECOGNITION))
    assert sorted(decode(r.headers, r.value).id for r in records) == sorted(
        b["event_id"] for b in batch
    )
    partitions = list(range(settings.topic_partitions))
    by_partition: dict[int, list[int]] = {}
    for r in records:
        ce = decode(r.headers, r.value)
        assert r.key == f"{ce.source}|{ce.id}".encode()
        # Where a keyed send puts it (murmur2, as Java's): every record of an event meets
        # on one partition, where the aggregator counts it once.
        assert r.partition == DefaultPartitioner()(r.key, partitions, partitions)
        by_partition.setdefault(r.partition, []).append(int(decode(r.headers, r.value).id[2:]))
    assert len(by_partition) > 1
    assert all(ids == sorted(ids) for ids in by_partition.values())


def test_401_without_a_valid_key(client: TestClient) -> None:
    missing = client.post("/v1/recognitions", json=KUDOS, headers={"Authorization": ""})
    assert missing.status_code == 401
    wrong = client.post("/v1/recognitions", json=KUDOS, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_403_for_a_key_without_the_scope(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [{"name": "survey", "key": "k-survey", "scopes": ["feedback:write"]}]
    monkeypatch.setenv("RAPPORT_API_KEYS", orjson.dumps(keys).decode())
    with TestClient(
        create(RecognitionSettings()), headers={"Authorization": "Bearer k-survey"}
    ) as c:
        response = c.post("/v1/recognitions", json=KUDOS)
    assert response.status_code == 403
    assert "recognition:write" in response.json()["message"]


def test_oversized_body_is_413(client: TestClient) -> None:
    response = client.post(
        "/v1/recognitions", content=b"{" + b" " * (3 << 20) + b"}",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 413


def test_people_put_and_delete(client: TestClient, settings: Settings) -> None:
    person = {**PEOPLE[3], "team_id": "t2"}
    assert client.put("/v1/people/p3", json=person).status_code == 202
    assert client.put("/v1/people/p4", json=person).status_code == 422  # id mismatch
    assert client.delete("/v1/people/p5").status_code == 202
    assert client.delete("/v1/people/nobody").status_code == 404
    records = asyncio.run(read_all(settings, topics.DIRECTORY))
    latest = {r.key: r.value for r in records}
    assert latest[b"p5"] is None  # tombstone
    assert orjson.loads(latest[b"p3"])["team_id"] == "t2"
    # Directory changes take effect for validation at once.
    gone = client.post("/v1/recognitions", json={**KUDOS, "recipient_ids": ["p5"]})
    assert gone.status_code == 422


def test_names_and_addresses_are_sealed_and_an_erasure_makes_them_and_the_messages_unreadable(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing of anyone's name or address is on the directory topic in plain text.
    raw = b"".join(r.value or b"" for r in asyncio.run(read_all(settings, topics.DIRECTORY)))
    assert b"P1 Person" not in raw and b"p1@x.io" not in raw and b"P2 Person" not in raw
    body = {**KUDOS, "event_id": "k-e", "message": "For the migration, p1 to p2"}
    assert client.post("/v1/recognitions", json=body).status_code == 202
    assert read_back(settings) == ("For the migration, p1 to p2", "P1 Person", "P2 Person")

    erased = client.post("/v1/people/p2/erasure")  # the recipient
    assert erased.status_code == 202 and erased.json() == {
        "person_id": "p2",
        "keys_destroyed": 1,
        "open_rounds": 0,
    }
    # What was said to them, and their name, can never be read again; the giver's can.
    assert read_back(settings) == (None, "P1 Person", None)
    entry = DirectoryEntry.model_validate(orjson.loads(
        {r.key: r.value for r in asyncio.run(read_all(settings, topics.DIRECTORY))}[b"p2"] or b""
    ))  # fmt: skip
    assert entry.erased and entry.active and entry.team_id == "t1"  # still counted, unnamed
    assert entry.name is entry.sealed_contact is None
    # They still count: a kudos to them is taken, and sealed with a new key of theirs.
    assert client.post("/v1/recognitions", json={**KUDOS, "event_id": "k-f"}).status_code == 202
    again = client.post("/v1/people/p2/erasure")
    assert again.status_code == 202 and again.json()["keys_destroyed"] == 1  # the new key
    assert client.post("/v1/people/p2/erasure").json()["keys_destroyed"] == 0
    assert client.post("/v1/people/nobody/erasure").status_code == 404

    keys = [{"name": "hr", "key": "k-hr", "scopes": ["directory:write", "recognition:write"]}]
    monkeypatch.setenv("RAPPORT_API_KEYS", orjson.dumps(keys).decode())
    with TestClient(create(RecognitionSettings()), headers={"Authorization": "Bearer k-hr"}) as c:
        refused = c.post("/v1/people/p1/erasure")
    assert refused.status_code == 403 and "privacy:admin" in refused.json()["message"]


def read_back(settings: Settings) -> tuple[str | None, str | None, str | None]:
    """As a fresh reader sees them: the message of kudos ``k-e``, p1's and p2's names."""

    [record] = [r for r in recognitions(settings) if r["id"] == "k-e"]

    async def read() -> tuple[str | None, str | None, str | None]:
        subjects = SubjectKeys(settings)
        view = DirectoryView(settings, subjects)
        await subjects.start()
        await view.start()
        try:
            context = message_context("/rapport/recognition/dev", "k-e")
            message = unseal(str(record["sealed_message"]), subjects.key, context)
            names = [(c.name if (e := view.get(p)) and (c := view.contact(e)) else None)
                     for p in ("p1", "p2")]  # fmt: skip
            return message, names[0], names[1]
        finally:
            await view.stop()
            await subjects.stop()

    return asyncio.run(read())


@pytest.mark.own_broker
def test_503_with_retry_after_when_the_broker_is_gone(
    client: TestClient, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.stop()
    response = client.post("/v1/recognitions", json=KUDOS)
    assert response.status_code == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.json()["error"] == "broker_unavailable"
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_429_with_retry_after_past_the_rate_limit(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAPPORT_RATE_LIMIT_PER_S", "0.01")  # one request, then one per 100 s
    key = ensure_dev_key(settings)
    with TestClient(create(RecognitionSettings()), headers={"Authorization": f"Bearer {key}"}) as c:
        assert c.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
        limited = c.post("/v1/recognitions", json=KUDOS)
    assert limited.status_code == 429
    assert limited.json()["error"] == "rate_limited"
    assert 90 <= int(limited.headers["Retry-After"]) <= 100
    assert recognitions(settings) == []


def test_the_fast_recognition_writes_answer_and_are_documented_as_fastapi_would(
    client: TestClient, settings: Settings
) -> None:
    """The real routes on the fast path (shared/infra/fastpath.py) against the same endpoints
    on FastAPI's own route class: the same answers, the same OpenAPI."""
    twin = APIRouter()
    for route in api.writes.routes:
        assert isinstance(route, DirectRoute)
        twin.add_api_route(route.path, route.endpoint, methods=list(route.methods),
                           status_code=route.status_code, response_model=route.response_model,
                           responses=route.responses, name=route.name)  # fmt: skip
    app = create_writer_app(
        "Rapport recognition service", settings, [twin, api.router, slack.router]
    )
    app.state.slack_replays = slack.Replays()
    auth = dict(client.headers)
    json_ = {"Content-Type": "application/json"}
    one = {**KUDOS, "event_id": "eq-1"}
    many = {"recognitions": [{**KUDOS, "event_id": f"eq-b{i}"} for i in range(3)]}
    cases: list[tuple[str, dict[str, str], bytes]] = [
        ("/v1/recognitions", json_, orjson.dumps(one)),
        ("/v1/recognitions", {**json_, "authorization": "Bearer wrong"}, orjson.dumps(one)),
        ("/v1/recognitions", json_, orjson.dumps({**KUDOS, "recipient_ids": ["nobody"]})),
        ("/v1/recognitions", json_, orjson.dumps({**KUDOS, "values": [], "colour": 1})),
        ("/v1/recognitions", {**json_, "Idempotency-Key": "k" * 129}, orjson.dumps(KUDOS)),
        ("/v1/recognitions", {"Content-Type": "text/plain"}, orjson.dumps(one)),
        ("/v1/recognitions", json_, codecs.BOM_UTF8 + orjson.dumps(one)),
        ("/v1/recognitions", json_, b'{"giver_id": '),
        ("/v1/recognitions/batch", json_, orjson.dumps(many)),
        ("/v1/recognitions/batch", json_, orjson.dumps({"recognitions": []})),
    ]

    def answers(c: TestClient) -> list[tuple[int, Any]]:
        sent = (c.post(path, headers={**auth, **h}, content=body) for path, h, body in cases)
        return [(r.status_code, r.json()) for r in sent]

    with TestClient(app) as fastapi:
        expected = answers(fastapi)
        documented = fastapi.get("/openapi.json").json()
    assert [s for s, _ in expected] == [202, 401, 422, 422, 422, 422, 202, 422, 202, 422]
    assert answers(client) == expected
    assert client.get("/openapi.json").json() == documented
