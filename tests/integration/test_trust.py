"""Trust end to end on a real broker: feedback API -> aggregator -> snapshots -> /metrics.

The privacy probes are here because privacy is enforced where figures are produced. Each
plays an attack a caller with nothing but a feedback:write key can make (resubmitting,
inventing survey ids, watching for the moment something moves) and checks that nothing
anyone can read moves: not /metrics, not the snapshot topic.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from services.feedback.api import create as create_feedback
from services.metrics.api import create as create_metrics
from services.recognition.api import create as create_recognition
from services.settings import RunSettings
from shared.contract import topics
from shared.contract.codec import DLQ_REASON, CloudEvent, decode
from shared.contract.events import SURVEY_RESPONSE
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port
from shared.infra.settings import DEFAULT_DIMENSIONS, Settings
from tests.support import wait_until
from tests.support.kafka import produce, read_all
from tests.support.metrics import parse, scrape
from tests.support.people import as_json, team

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"
K = 5
PARTITIONS = 4  # RAPPORT_TOPIC_PARTITIONS in tests: a close marker on each
MEMBERS = [f"m{i:02d}" for i in range(12)]
PEOPLE = as_json(team("alpha", "lead", MEMBERS))
INDEX = 'rapport_trust_index{team="alpha",window="28d"}'
RESPONSES = 'rapport_trust_responses{team="alpha",window="28d"}'


class Stack:
    """Feedback and metrics services in process, one aggregator worker as a process."""

    def __init__(
        self, settings: Settings, feedback: TestClient, metrics: TestClient, worker_url: str
    ) -> None:
        self.settings = settings
        self.feedback = feedback
        self.metrics = metrics
        self.worker_url = worker_url
        self.expected = 0  # records the aggregate stage must have taken in

    def open(self, survey: str) -> None:
        response = self.feedback.post("/v1/survey-rounds", json={"survey_id": survey})
        assert response.status_code == 202, response.text

    def answer(self, who: str, score: int, survey: str = "s1", **extra: Any) -> None:
        body = {"survey_id": survey, "respondent_id": who,
                "answers": dict.fromkeys(DEFAULT_DIMENSIONS, score), **extra}  # fmt: skip
        response = self.feedback.post("/v1/survey-responses", json=body)
        assert response.status_code == 202, response.text
        self.expected += 1

    def close(self, survey: str = "s1") -> None:
        response = self.feedback.post(f"/v1/survey-rounds/{survey}/close")
        assert response.status_code == 202, response.text
        self.expected += PARTITIONS

    def settle(self) -> None:
        """Wait until the worker has taken in everything sent, and its snapshots are out."""

        def aggregated() -> float:  # nothing while the worker is still starting
            samples = scrape(f"{self.worker_url}/metrics", timeout=5)
            return samples.get('rapport_aggregator_events_total{stage="aggregate"}', 0)

        wait_until(lambda: aggregated() >= self.expected, timeout=60)
        # Snapshots go out on a 0.2 s timer: settled once none came for three ticks.
        counts = [self.snapshot_count()]

        def quiet() -> bool:
            time.sleep(0.6)
            counts.append(self.snapshot_count())
            return counts[-1] == counts[-2]

        wait_until(quiet, timeout=30, interval=0)

    def snapshot_count(self) -> int:
        records = asyncio.run(read_all(self.settings, topics.SNAPSHOTS))
        return sum(r.key == b"alpha" for r in records)

    def snapshot(self) -> dict[str, Any]:
        records = asyncio.run(read_all(self.settings, topics.SNAPSHOTS))
        [*_, latest] = [r for r in records if r.key == b"alpha"]
        data: dict[str, Any] = decode(latest.headers, latest.value).data
        return data

    def trust_metrics(self) -> dict[str, float]:
        """The trust samples on /metrics, once it has caught up with the snapshot topic."""
        wait_until(lambda: self.metrics.get("/readyz").status_code == 200)
        samples = parse(self.metrics.get("/metrics").text)
        return {k: v for k, v in samples.items() if k.startswith("rapport_trust")}


@pytest.fixture
def stack(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> Iterator[Stack]:
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as directory:
        assert directory.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
    port = free_port()
    spawn("aggregator", log=tmp_path / "aggregator.log",
          extra_env={"RAPPORT_AGGREGATOR_METRICS_PORT": str(port)})  # fmt: skip
    with (
        TestClient(create_feedback(settings), headers=headers) as feedback,
        TestClient(create_metrics(settings)) as metrics,
    ):
        yield Stack(settings, feedback, metrics, f"http://127.0.0.1:{port}")


def test_resubmitting_and_watching_an_open_round_shows_nothing(stack: Stack) -> None:
    stack.open("s1")
    for m in MEMBERS[:K]:
        stack.answer(m, 2)
    stack.settle()
    assert stack.snapshot_count() == 0 and stack.trust_metrics() == {}
    # The attack: answer as one colleague, watch, answer back; and again.
    for score in (5, 1, 5):
        stack.answer(MEMBERS[0], score)
        stack.settle()
        assert stack.snapshot_count() == 0  # not even the moment of an answer shows
        assert stack.trust_metrics() == {}

    stack.close("s1")
    stack.settle()
    closed = stack.trust_metrics()
    assert closed[INDEX] == pytest.approx(20.0)  # the answers as they stood: one 5, four 2s
    assert closed[RESPONSES] == K
    assert closed['rapport_trust_participation_ratio{team="alpha",window="28d"}'] == K / 13
    published = stack.snapshot_count()

    # After the close: the API refuses, and a record produced straight to the topic
    # goes to the DLQ. Nothing published moves.
    late = stack.feedback.post("/v1/survey-responses", json={
        "survey_id": "s1", "respondent_id": MEMBERS[1],
        "answers": dict.fromkeys(DEFAULT_DIMENSIONS, 5)})  # fmt: skip
    assert late.status_code == 422 and "is closed" in late.json()["message"]
    data = {"survey_id": "s1", "respondent": "5" * 32,  # a token the closed round never had
            "team_id": "alpha", "answers": dict.fromkeys(DEFAULT_DIMENSIONS, 5)}  # fmt: skip
    direct = CloudEvent("direct-1", "/survey-tool", SURVEY_RESPONSE, datetime.now(UTC), data)
    asyncio.run(produce(stack.settings, topics.SURVEY, [(b"alpha", direct)]))
    stack.expected += 1
    stack.settle()
    dead = asyncio.run(read_all(stack.settings, topics.dlq(topics.SURVEY)))
    assert [dict(r.headers)[DLQ_REASON] for r in dead] == [
        b"RoundIsClosed: round 's1' closed before this reached the log"
    ]
    assert stack.trust_metrics() == closed and stack.snapshot_count() == published


def test_fresh_survey_ids_and_small_rounds_publish_nothing(stack: Stack) -> None:
    for m in MEMBERS[:K]:
        fresh = stack.feedback.post("/v1/survey-responses", json={
            "survey_id": f"fresh-{m}", "respondent_id": m,
            "answers": dict.fromkeys(DEFAULT_DIMENSIONS, 3)})  # fmt: skip
        assert fresh.status_code == 422 and "an admin opens rounds" in fresh.json()["message"]
    stack.open("s1")
    for m in MEMBERS[: K - 1]:  # k - 1 real answers, then the round closes
        stack.answer(m, 4, enps=9, comment=f"note {m}")
    stack.close("s1")
    stack.settle()
    assert stack.trust_metrics() == {} and stack.snapshot_count() == 0

    stack.open("s2")
    for m in MEMBERS[:K]:
        stack.answer(m, 4, survey="s2")
    stack.close("s2")
    stack.settle()
    assert stack.trust_metrics()[RESPONSES] == K  # only the round of k


def test_figures_move_by_whole_rounds_and_no_raw_id_reaches_kafka(
    stack: Stack, settings: Settings
) -> None:
    stack.open("s1")
    for i, m in enumerate(MEMBERS[:K]):
        stack.answer(m, 3, enps=9, comment=f"note {i}")
    assessment = {"survey_id": "s1", "leader_id": "lead", "predicted": {"growth": 5}}
    assert stack.feedback.post("/v1/self-assessments", json=assessment).status_code == 202
    stack.expected += 1
    stack.close("s1")
    stack.settle()
    first = stack.trust_metrics()
    assert first[RESPONSES] == K
    assert first['rapport_trust_enps{team="alpha",window="28d"}'] == 100.0
    gap = 'rapport_trust_perception_gap{dimension="growth",team="alpha",window="28d"}'
    assert first[gap] == pytest.approx(5 - 3)
    [comments] = stack.snapshot()["trust"]["comments"]
    assert sorted(comments["comments"]) == [f"note {i}" for i in range(K)]

    # Both kinds of /metrics negotiate the same way: OpenMetrics when a scraper asks.
    for get in (stack.metrics.get, lambda path, **kw: httpx.get(stack.worker_url + path, **kw)):
        assert get("/metrics").headers["content-type"].startswith("text/plain; version=")
        answer = get("/metrics", headers={"Accept": OPENMETRICS_ACCEPT})
        assert answer.headers["content-type"].startswith("application/openmetrics-text")
        families = list(text_string_to_metric_families(answer.text))  # strict: "# EOF" etc.
        assert families
    index = 'rapport_trust_index{team="alpha",window="28d"}'
    [value] = [sample.value for family in text_string_to_metric_families(
        stack.metrics.get("/metrics", headers={"Accept": OPENMETRICS_ACCEPT}).text)
        for sample in family.samples
        if sample.name == "rapport_trust_index" and sample.labels["team"] == "alpha"
        and sample.labels["window"] == "28d"]  # fmt: skip
    assert value == first[index]

    stack.open("s2")
    for m in MEMBERS[2 : 2 + 2 * K]:  # ten: k more than the first (the differencing guard)
        stack.answer(m, 5, survey="s2")
    stack.close("s2")
    stack.settle()
    assert stack.trust_metrics()[RESPONSES] == 3 * K  # a whole round more

    # A record that is not a valid survey response goes to the DLQ, counted nowhere.
    bad = CloudEvent("bad-1", "/survey-tool", SURVEY_RESPONSE, datetime.now(UTC), {"x": 1})
    asyncio.run(produce(settings, topics.SURVEY, [(b"alpha", bad)]))
    dead = wait_until(lambda: asyncio.run(read_all(settings, topics.dlq(topics.SURVEY))))
    assert dict(dead[0].headers)["ce_id"] == b"bad-1"

    forbidden = [m.encode() for m in MEMBERS] + [b"M00 Person", b"m00@x.io"]
    for spec in topics.all_topics(settings):
        if spec.name in (topics.DIRECTORY, topics.SUBJECT_KEYS):
            continue  # the people directory itself, and each person's data key
        for r in asyncio.run(read_all(settings, spec.name)):
            raw = b"".join([r.key or b"", r.value or b"", *(v for _, v in r.headers)])
            raw = SEALED.sub(b"", raw)  # random base64: "m01" turns up in some
            assert not [f for f in forbidden if f in raw], (spec.name, raw[:300])


SEALED = re.compile(rb"s1\.[0-9a-f,]+\.[\w-]+\.[\w-]+")  # shared.infra.sealing's form
FLOOD = [f"f{i:02d}" for i in range(60)]


def test_a_flood_of_long_comments_stops_no_worker_and_no_other_team(
    settings: Settings,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every round a key may open, 60 people answering each with the longest comment
    (four bytes a character): before, one team's state passed the broker's record limit
    and the worker that wrote it exited, and every worker after it."""
    monkeypatch.setenv("RAPPORT_RATE_LIMIT_PER_S", "0")
    settings = RunSettings()  # the recognition and the feedback service's
    flood = [{"id": f, "name": f, "email": f"{f}@x.io", "team_id": "flood"} for f in FLOOD]
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as directory:
        people = {"people": PEOPLE + flood}
        assert directory.post("/v1/people/batch", json=people).status_code == 202
    port = free_port()
    worker = spawn("aggregator", log=tmp_path / "aggregator.log",
                   extra_env={"RAPPORT_AGGREGATOR_METRICS_PORT": str(port)})  # fmt: skip
    answers = dict.fromkeys(DEFAULT_DIMENSIONS, 4)
    rounds = [f"s{n}" for n in range(10)]
    with TestClient(create_feedback(settings), headers=headers) as feedback:
        for survey in rounds:
            assert feedback.post("/v1/survey-rounds", json={"survey_id": survey}).is_success
        one_more = feedback.post("/v1/survey-rounds", json={"survey_id": "s10"})
        assert one_more.status_code == 422
        too_long = {"survey_id": "s0", "respondent_id": FLOOD[0], "answers": answers,
                    "comment": "x" * 1001}  # fmt: skip
        assert feedback.post("/v1/survey-responses", json=too_long).status_code == 422
        for survey in rounds:
            for who in FLOOD:
                body = {"survey_id": survey, "respondent_id": who, "answers": answers,
                        "comment": f"{who} {survey} " + "\U0001f600" * 990}  # fmt: skip
                assert feedback.post("/v1/survey-responses", json=body).status_code == 202
            assert feedback.post(f"/v1/survey-rounds/{survey}/close").is_success
        feedback.post("/v1/survey-rounds", json={"survey_id": "calm"}).raise_for_status()
        for who in MEMBERS[:K]:  # then another team answers
            body = {"survey_id": "calm", "respondent_id": who, "answers": answers}
            assert feedback.post("/v1/survey-responses", json=body).status_code == 202
        feedback.post("/v1/survey-rounds/calm/close").raise_for_status()

    expected = len(rounds) * (len(FLOOD) + PARTITIONS) + K + PARTITIONS
    aggregate = 'rapport_aggregator_events_total{stage="aggregate"}'
    worker_url = f"http://127.0.0.1:{port}/metrics"
    wait_until(lambda: scrape(worker_url).get(aggregate, 0) >= expected, timeout=120)
    with TestClient(create_metrics(settings)) as metrics:
        wait_until(lambda: metrics.get("/readyz").status_code == 200, timeout=60)  # caught up
        wait_until(lambda: INDEX in parse(metrics.get("/metrics").text), timeout=60)
        flood_responses = parse(metrics.get("/metrics").text).get(
            'rapport_trust_responses{team="flood",window="28d"}'
        )
    assert worker.poll() is None  # still running
    assert flood_responses == len(rounds) * len(FLOOD)  # every answer counted, none lost
    assert asyncio.run(read_all(settings, topics.dlq(topics.SURVEY))) == []
    assert scrape(worker_url)["rapport_aggregator_trimmed_snapshots_total"] >= 1
    changelog = f"{topics.AGGREGATOR_APP_ID}-{topics.TEAM_TRUST_TABLE}-changelog"
    for topic in (topics.SNAPSHOTS, changelog):
        for record in asyncio.run(read_all(settings, topic)):
            assert len(record.value or b"") < 1_000_000  # each a record the broker takes


def test_an_open_round_survives_a_killed_worker_and_closes_exact(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    """The open answers live in the table's changelog: a worker that takes over after a
    SIGKILL recovers them, closes the round on its marker, and counts each answer once."""
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as directory:
        assert directory.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
    ports = [free_port(), free_port()]
    first = spawn("aggregator", log=tmp_path / "first.log",
                  extra_env={"RAPPORT_AGGREGATOR_METRICS_PORT": str(ports[0])})  # fmt: skip
    with (
        TestClient(create_feedback(settings), headers=headers) as feedback,
        TestClient(create_metrics(settings)) as metrics,
    ):
        stack = Stack(settings, feedback, metrics, f"http://127.0.0.1:{ports[0]}")
        stack.open("s1")
        for m in MEMBERS[: K + 1]:
            stack.answer(m, 2)
        stack.answer(MEMBERS[0], 5)  # a resubmission: replaces, counts once
        stack.settle()
        first.kill()
        first.wait(timeout=10)
        spawn("aggregator", log=tmp_path / "second.log",
              extra_env={"RAPPORT_AGGREGATOR_METRICS_PORT": str(ports[1])})  # fmt: skip
        stack.close("s1")  # the new worker re-reads the survey topic from its committed offsets
        figures = wait_until(lambda: RESPONSES in (f := stack.trust_metrics()) and f, timeout=60)
    assert figures[RESPONSES] == K + 1
    favorable = 'rapport_trust_favorable_ratio{dimension="growth",team="alpha",window="28d"}'
    assert figures[favorable] == pytest.approx(1 / (K + 1))  # the one 5, the rest 2


def test_a_round_of_the_same_five_plus_one_is_withheld(stack: Stack) -> None:
    """The differencing attack of issue 30: round B's six are round A's five, answering
    as before, plus one; six times B's mean minus five times A's would be that person's
    answer. B is never published, not even its turnout."""
    stack.open("a")
    for n, m in enumerate(MEMBERS[:K]):
        stack.answer(m, 2 + n % 4, survey="a")
    stack.close("a")
    stack.settle()
    after_a = stack.trust_metrics()
    assert after_a[RESPONSES] == K
    stack.open("b")
    for n, m in enumerate(MEMBERS[: K + 1]):
        stack.answer(m, 2 + n % 4 if n < K else 5, survey="b")
    stack.close("b")
    stack.settle()
    assert stack.trust_metrics() == after_a
    assert [s["respondents"] for s in stack.snapshot()["trust"]["surveys"].values()] == [K]
    # A round of the same size is not a difference of one: it is published.
    stack.open("c")
    for m in MEMBERS[1 : K + 1]:
        stack.answer(m, 4, survey="c")
    stack.close("c")
    stack.settle()
    assert stack.trust_metrics()[RESPONSES] == 2 * K
