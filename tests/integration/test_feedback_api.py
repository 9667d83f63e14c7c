"""The feedback service against a real broker: catalogue, tokens, errors, auth."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from services.feedback.api import create
from services.feedback.settings import FeedbackSettings
from services.recognition.api import create as create_recognition
from shared.contract import topics
from shared.contract.codec import decode
from shared.contract.events import Answers
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port, wait_for_port
from shared.infra.sealing import SealingError
from shared.infra.settings import DEFAULT_DIMENSIONS, Settings
from shared.readmodels.rounds import KEY_SUFFIX, MAX_OPEN_ROUNDS, token
from tests.support.kafka import read_all
from tests.support.people import as_json, person, team

PEOPLE = as_json([*team("alpha", "lead", ["ann", "bob"]), person("solo", "beta")])
ANSWERS = dict.fromkeys(DEFAULT_DIMENSIONS, 4)
RESPONSE = {"survey_id": "2026-11", "respondent_id": "ann", "answers": ANSWERS}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    key = ensure_dev_key(settings)
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(create_recognition(settings), headers=headers) as directory:
        assert directory.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
    with TestClient(create(settings), headers=headers) as c:
        assert c.post("/v1/survey-rounds", json={"survey_id": "2026-11"}).status_code == 202
        yield c


def survey_records(settings: Settings) -> list[tuple[bytes, dict[str, object]]]:
    out = []
    for r in asyncio.run(read_all(settings, topics.SURVEY)):
        ce = decode(r.headers, r.value)
        out.append((r.key, {"type": ce.type, "time": ce.time, "partition": r.partition,
                            **ce.data}))  # fmt: skip
    return out


def test_questions_default_to_one_item_per_dimension_plus_enps(client: TestClient) -> None:
    body = client.get("/v1/questions").json()
    assert [i["id"] for i in body["items"]] == list(DEFAULT_DIMENSIONS)
    assert all(i["id"] == i["dimension"] and i["text"] for i in body["items"])
    assert body["scale"]["5"] == "strongly agree" and "recommend" in body["enps"]


def test_a_yaml_file_replaces_the_catalogue(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "questions.yaml"
    path.write_text(
        "items:\n"
        "  - {id: q1, dimension: direction, text: I know our goals.}\n"
        "  - {id: q2, dimension: direction, text: I know my part in them.}\n"
        "  - {id: q3, dimension: wellbeing, text: I can switch off after work.}\n"
    )
    monkeypatch.setenv("RAPPORT_QUESTIONS_FILE", str(path))
    with TestClient(create(FeedbackSettings())) as c:
        body = c.get("/v1/questions").json()
    assert [i["id"] for i in body["items"]] == ["q1", "q2", "q3"]
    assert body["dimensions"] == ["direction", "wellbeing"]


def test_a_response_is_published_under_the_respondents_token_for_the_round_sealed(
    client: TestClient, settings: Settings
) -> None:
    body = {**RESPONSE, "enps": 9, "comment": "  More focus time, please. "}
    response = client.post("/v1/survey-responses", json=body, headers={"Idempotency-Key": "r1"})
    assert response.status_code == 202, response.text
    assert response.json() == {"event_id": "r1"}
    [(key, record)] = survey_records(settings)
    assert key == b"alpha"  # keyed by team: the team comes from the directory
    round_key = client.app.state.rounds.keys.get("2026-11")  # type: ignore[attr-defined]
    assert round_key is not None and len(round_key) == 32
    assert record["respondent"] == token(round_key, "ann")
    assert record["type"] == "rapport.feedback.survey_response.v1"
    assert record.pop("partition") is not None
    # The answers are sealed with the response's own key, which opens them.
    assert record["answers"] is None and record["comment"] is None and record["enps"] is None
    responses = client.app.state.responses  # type: ignore[attr-defined]
    opened = responses.open(record["sealed_answers"], "2026-11", record["respondent"])
    assert opened == Answers(answers=ANSWERS, enps=9, comment="More focus time, please.")
    with pytest.raises(SealingError):  # bound to its round and respondent
        responses.open(record["sealed_answers"], "2026-12", record["respondent"])
    raw = orjson.dumps(record, default=str)
    assert b"focus" not in raw and b"respondent_id" not in raw
    plain = orjson.dumps({k: v for k, v in record.items() if k != "sealed_answers"}, default=str)
    assert b"ann" not in plain.lower()  # (base64 is random: "ann" turns up in some)


def test_a_token_holds_within_a_round_and_its_key_is_destroyed_at_close(
    client: TestClient, settings: Settings
) -> None:
    assert client.post("/v1/survey-rounds", json={"survey_id": "2026-12"}).status_code == 202
    for survey, who in (("2026-11", "ann"), ("2026-11", "ann"), ("2026-11", "bob"),
                        ("2026-12", "ann")):  # fmt: skip
        answer = {**RESPONSE, "survey_id": survey, "respondent_id": who}
        assert client.post("/v1/survey-responses", json=answer).status_code == 202
    ann, again, bob, next_round = [r["respondent"] for _, r in survey_records(settings)]
    assert ann == again  # a resubmission replaces the answer
    assert len({ann, bob, next_round}) == 3  # nothing links ann's two rounds

    assert client.post("/v1/survey-rounds/2026-11/close").status_code == 202
    keys = client.app.state.rounds.keys  # type: ignore[attr-defined]
    assert keys.get("2026-11") is None and keys.get("2026-12") is not None
    kept = [r for r in asyncio.run(read_all(settings, topics.ROUNDS))
            if r.key == b"2026-11" + KEY_SUFFIX.encode()]  # fmt: skip
    if settings.embedded:  # never on the embedded broker, which never compacts: a file
        assert kept == []
        assert len(list((settings.var_dir / "round-keys").iterdir())) == 1  # 2026-12's
    else:  # the key, then its tombstone (compacted away: tests/integration/test_forget.py)
        assert [r.value is None for r in kept] == [False, True]
    # A second close changes nothing; a restarted service has no key for the round.
    assert client.post("/v1/survey-rounds/2026-11/close").status_code == 202
    with TestClient(create(settings)) as fresh:
        assert fresh.get("/readyz").status_code == 200
        assert fresh.app.state.rounds.keys.get("2026-11") is None  # type: ignore[attr-defined]


def test_a_self_assessment_is_for_the_team_the_leader_leads(
    client: TestClient, settings: Settings
) -> None:
    body = {"survey_id": "2026-11", "leader_id": "lead", "predicted": {"direction": 5}}
    assert client.post("/v1/self-assessments", json=body).status_code == 202
    [(key, record)] = survey_records(settings)
    assert key == b"alpha" and record["team_id"] == "alpha" and record["leader_id"] == "lead"
    solo = client.post("/v1/self-assessments", json={**body, "leader_id": "solo"})
    assert solo.status_code == 422
    assert "manages no active people" in solo.json()["message"]


def test_submitted_at_dates_an_import_of_an_earlier_round(
    client: TestClient, settings: Settings
) -> None:
    earlier = (datetime.now(UTC) - timedelta(days=30)).replace(microsecond=0)
    body = {**RESPONSE, "submitted_at": earlier.isoformat()}
    assert client.post("/v1/survey-responses", json=body).status_code == 202
    [(_, record)] = survey_records(settings)
    assert record["time"] == earlier


@pytest.mark.parametrize(
    ("path", "change", "field", "reason"),
    [
        ("survey-responses", {"respondent_id": "nobody"}, "respondent_id",
         "unknown or inactive person 'nobody'"),
        ("survey-responses", {"answers": {"direction": 4}}, "answers", "missing item(s)"),
        ("survey-responses", {"answers": {**ANSWERS, "mood": 3}}, "answers",
         "unknown item(s) ['mood']"),
        ("survey-responses", {"answers": {**ANSWERS, "growth": 6}}, "answers.growth",
         "less than or equal to 5"),
        ("survey-responses", {"enps": 11}, "enps", "less than or equal to 10"),
        ("survey-responses", {"comment": "x" * 1001}, "comment", "at most 1000 characters"),
        ("survey-responses", {"survey_id": "fresh"}, "survey_id",
         "no round 'fresh': an admin opens rounds"),
        ("self-assessments", {"survey_id": "fresh"}, "survey_id", "no round 'fresh'"),
        ("survey-responses", {"team_id": "beta"}, "team_id", "unknown field"),
        ("survey-responses", {"submitted_at": (datetime.now(UTC) + timedelta(hours=1))
                              .isoformat()}, "submitted_at", "more than 5 minutes in the future"),
        ("survey-responses", {"submitted_at": "1900-01-01T00:00:00Z"}, "submitted_at",
         "must not be more than 90 days ago"),
        ("survey-responses", {"submitted_at": "0001-01-01T00:00:00+01:00"}, "submitted_at",
         "out of range"),
        ("self-assessments", {"submitted_at": "0001-01-01T00:00:00+05:00"}, "submitted_at",
         "out of range"),
        ("self-assessments", {"predicted": {"morale": 4}}, "predicted",
         "unknown dimension(s) ['morale']"),
        ("self-assessments", {"predicted": {}}, "predicted", "at least 1 item"),
    ],
)  # fmt: skip
def test_invalid_input_is_a_clear_422_and_publishes_nothing(
    client: TestClient,
    settings: Settings,
    path: str,
    change: dict[str, object],
    field: str,
    reason: str,
) -> None:
    base: dict[str, object] = (
        dict(RESPONSE)
        if path == "survey-responses"
        else {"survey_id": "s", "leader_id": "lead", "predicted": {"growth": 4}}
    )
    response = client.post(f"/v1/{path}", json={**base, **change})
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["field"] == field and reason in error["reason"], error
    assert survey_records(settings) == []


def test_401_without_a_key_and_403_without_the_scope(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [{"name": "slack", "key": "k-slack", "scopes": ["recognition:write"]}]
    monkeypatch.setenv("RAPPORT_API_KEYS", orjson.dumps(keys).decode())
    with TestClient(create(FeedbackSettings())) as c:
        assert c.post("/v1/survey-responses", json=RESPONSE).status_code == 401
        wrong = c.post(
            "/v1/survey-responses", json=RESPONSE, headers={"Authorization": "Bearer k-slack"}
        )
        assert c.get("/v1/questions").status_code == 200  # reading the catalogue is open
    assert wrong.status_code == 403 and "feedback:write" in wrong.json()["message"]


def test_rounds_open_and_close_and_answers_are_taken_only_while_open(
    client: TestClient, settings: Settings
) -> None:
    assert client.post("/v1/survey-responses", json=RESPONSE).status_code == 202
    again = client.post("/v1/survey-rounds", json={"survey_id": "2026-11"})
    assert again.status_code == 422 and "exists already (open)" in again.json()["message"]
    closed = client.post("/v1/survey-rounds/2026-11/close")
    assert closed.status_code == 202 and closed.json()["state"] == "closed"
    late = client.post("/v1/survey-responses", json=RESPONSE)
    assert late.status_code == 422 and late.json()["errors"] == [
        {"field": "survey_id", "reason": "round '2026-11' is closed"}
    ]
    assessment = {"survey_id": "2026-11", "leader_id": "lead", "predicted": {"direction": 5}}
    assert client.post("/v1/self-assessments", json=assessment).status_code == 422
    assert client.post("/v1/survey-rounds/2026-11/close").json() == closed.json()  # no-op
    assert client.post("/v1/survey-rounds/nope/close").status_code == 404
    assert [(r["survey_id"], r["state"]) for r in client.get("/v1/survey-rounds").json()] == [
        ("2026-11", "closed")
    ]
    markers = [r for _, r in survey_records(settings) if r["type"].endswith("round_closed.v1")]
    assert sorted(r["partition"] for r in markers) == [0, 1, 2, 3]  # one on every partition
    assert {r["survey_id"] for r in markers} == {"2026-11"}


def test_a_writer_key_cannot_open_or_close_rounds_and_rounds_are_bounded(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [{"name": "tool", "key": "k-tool", "scopes": ["feedback:write"]}]
    monkeypatch.setenv("RAPPORT_API_KEYS", orjson.dumps(keys).decode())
    with TestClient(
        create(FeedbackSettings()), headers={"Authorization": "Bearer k-tool"}
    ) as writer:
        assert writer.post("/v1/survey-rounds", json={"survey_id": "x"}).status_code == 403
        assert writer.post("/v1/survey-rounds/2026-11/close").status_code == 403
    for n in range(MAX_OPEN_ROUNDS - 1):  # one is open already
        assert client.post("/v1/survey-rounds", json={"survey_id": f"r{n}"}).status_code == 202
    over = client.post("/v1/survey-rounds", json={"survey_id": "one-more"})
    assert over.status_code == 422 and "close one first" in over.json()["message"]


def test_concurrent_opens_at_two_replicas_never_pass_the_limit_nor_reuse_an_id(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        spawn("feedback", log=tmp_path / f"feedback-{i}.log",
              extra_env={"RAPPORT_FEEDBACK_PORT": str(port)})  # fmt: skip
    for port in ports:
        wait_for_port(port, timeout=60)
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}

    async def open_all(ids: list[str]) -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=headers, timeout=30) as http:
            return await asyncio.gather(*(
                http.post(f"http://127.0.0.1:{ports[n % 2]}/v1/survey-rounds",
                          json={"survey_id": survey_id})
                for n, survey_id in enumerate(ids)))  # fmt: skip

    answers = asyncio.run(open_all([f"round-{n}" for n in range(2 * MAX_OPEN_ROUNDS)]))
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] * MAX_OPEN_ROUNDS + [422] * MAX_OPEN_ROUNDS, statuses
    refused = [a.json() for a in answers if a.status_code == 422]
    assert all(r["errors"][0]["field"] == "survey_id" for r in refused)
    assert all("close one first" in r["message"] for r in refused), refused
    for port in ports:  # both replicas see exactly the rounds that were answered 202
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/survey-rounds").json()
        assert sorted(r["survey_id"] for r in listed) == sorted(
            a.json()["survey_id"] for a in answers if a.status_code == 202
        )
    # A place free again, and one id asked for at once at both replicas: one round.
    first = next(a.json()["survey_id"] for a in answers if a.status_code == 202)
    close = httpx.post(f"http://127.0.0.1:{ports[0]}/v1/survey-rounds/{first}/close",
                       headers=headers)  # fmt: skip
    assert close.status_code == 202
    same = asyncio.run(open_all(["close-call", "close-call"]))
    assert sorted(a.status_code for a in same) == [202, 422], [a.text for a in same]
