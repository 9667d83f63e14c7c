"""Trust end to end on a real broker: feedback API -> aggregator -> snapshots -> /metrics.

The privacy probes are here because privacy is enforced where figures are produced:
whatever a consumer reads (metrics, the snapshot topic), it must not find a figure from
fewer than k respondents, nor one that moved by fewer than k.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from services.feedback.api import create as create_feedback
from services.metrics.api import create as create_metrics
from services.recognition.api import create as create_recognition
from shared import topics
from shared.auth import ensure_dev_key
from shared.broker import free_port
from shared.codec import DLQ_REASON, CloudEvent, decode
from shared.events import SURVEY_RESPONSE
from shared.settings import DEFAULT_DIMENSIONS, Settings
from tests.conftest import wait_until
from tests.e2e.test_stack import parse
from tests.kafka_helpers import produce, read_all

K = 5
MEMBERS = [f"m{i:02d}" for i in range(12)]
PEOPLE = [{"id": "lead", "name": "Lee Lead", "email": "lee@x.io", "team_id": "alpha"}] + [
    {"id": m, "name": f"Member {m}", "email": f"{m}@x.io", "team_id": "alpha",
     "manager_id": "lead"}
    for m in MEMBERS
]  # fmt: skip


class Stack:
    """Feedback and metrics services in process, one aggregator worker as a process."""

    def __init__(self, settings: Settings, feedback: TestClient, metrics: TestClient) -> None:
        self.settings = settings
        self.feedback = feedback
        self.metrics = metrics

    def answer(self, who: str, score: int, survey: str = "s1", **extra: Any) -> None:
        body = {"survey_id": survey, "respondent_id": who,
                "answers": dict.fromkeys(DEFAULT_DIMENSIONS, score), **extra}  # fmt: skip
        before = self.snapshot_count()
        response = self.feedback.post("/v1/survey-responses", json=body)
        assert response.status_code == 202, response.text
        # Processed once the aggregator has republished the team's snapshot.
        wait_until(lambda: self.snapshot_count() > before, timeout=60)

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
        count = self.snapshot_count()
        wait_until(lambda: self.metrics.get("/readyz").status_code == 200)
        assert self.snapshot_count() == count
        samples = {}
        for line in self.metrics.get("/metrics").text.splitlines():
            if line.startswith("rapport_trust"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples


@pytest.fixture
def stack(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> Iterator[Stack]:
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as directory:
        assert directory.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
    spawn("aggregator", log=tmp_path / "aggregator.log")
    with (
        TestClient(create_feedback(settings), headers=headers) as feedback,
        TestClient(create_metrics(settings)) as metrics,
    ):
        yield Stack(settings, feedback, metrics)


def test_anonymity_and_differencing_probes(stack: Stack) -> None:
    for i in range(K - 1):
        stack.answer(MEMBERS[i], 2)
    snapshot = stack.snapshot()
    assert snapshot["trust"] == {"blocks": [], "enps": [], "comments": [], "surveys": {},
                                 "predictions": []}  # fmt: skip
    assert stack.trust_metrics() == {}

    stack.answer(MEMBERS[K - 1], 4)  # the k-th respondent: figures appear
    first = stack.trust_metrics()
    index = 'rapport_trust_index{team="alpha",window="28d"}'
    assert first[index] == pytest.approx(20.0)  # one in five answered 4: favorable 20 %
    assert first['rapport_trust_responses{team="alpha",window="28d"}'] == K
    participation = 'rapport_trust_participation_ratio{team="alpha",window="28d"}'
    assert first[participation] == K / 13  # twelve members and their lead

    for i in range(K, 2 * K - 1):  # four more: nothing may move
        stack.answer(MEMBERS[i], 5)
        assert stack.trust_metrics() == first
    assert len(stack.snapshot()["trust"]["blocks"]) == 1

    stack.answer(MEMBERS[2 * K - 1], 5)  # the next k: all move together
    second = stack.trust_metrics()
    assert second[index] == pytest.approx(60.0)  # 1 + 5 favorable answers of 10
    assert second['rapport_trust_responses{team="alpha",window="28d"}'] == 2 * K


def test_resubmission_counts_once_and_no_raw_id_reaches_kafka(
    stack: Stack, settings: Settings
) -> None:
    for i, m in enumerate(MEMBERS[:K]):
        stack.answer(m, 3, enps=9, comment=f"note {i}")
    stack.answer(MEMBERS[0], 5, enps=9, comment="changed my mind")  # replaces, not adds
    figures = stack.trust_metrics()
    assert figures['rapport_trust_responses{team="alpha",window="28d"}'] == K
    favorable = 'rapport_trust_favorable_ratio{dimension="growth",team="alpha",window="28d"}'
    assert figures[favorable] == pytest.approx(1 / K)
    assert figures['rapport_trust_enps{team="alpha",window="28d"}'] == 100.0
    [comments] = stack.snapshot()["trust"]["comments"]
    assert "changed my mind" in comments["comments"] and "note 0" not in comments["comments"]

    assessment = {"survey_id": "s1", "leader_id": "lead", "predicted": {"growth": 5}}
    before = stack.snapshot_count()
    assert stack.feedback.post("/v1/self-assessments", json=assessment).status_code == 202
    wait_until(lambda: stack.snapshot_count() > before, timeout=60)
    gap = 'rapport_trust_perception_gap{dimension="growth",team="alpha",window="28d"}'
    assert stack.trust_metrics()[gap] == pytest.approx(5 - (3 * 4 + 5) / K)

    # A record that is not a valid survey response goes to the DLQ, counted nowhere.
    bad = CloudEvent("bad-1", "/survey-tool", SURVEY_RESPONSE, datetime.now(UTC), {"x": 1})
    asyncio.run(produce(settings, topics.SURVEY, [(b"alpha", bad)]))
    dead = wait_until(lambda: asyncio.run(read_all(settings, topics.dlq(topics.SURVEY))))
    assert dict(dead[0].headers)["ce_id"] == b"bad-1"

    forbidden = [m.encode() for m in MEMBERS] + [b"Member m0", b"m00@x.io"]
    for spec in topics.all_topics(settings):
        if spec.name == topics.DIRECTORY:
            continue  # the people directory itself
        for r in asyncio.run(read_all(settings, spec.name)):
            raw = b"".join([r.key or b"", r.value or b"", *(v for _, v in r.headers)])
            assert not [f for f in forbidden if f in raw], (spec.name, raw[:300])


FLOOD = [f"f{i:02d}" for i in range(12)]


def test_a_flood_of_long_comments_stops_no_worker_and_no_other_team(
    settings: Settings,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One writer key, 540 answers with 2,000-character comments under 45 survey ids:
    the team's state would pass the broker's record limit (the worker that wrote it
    exited, and every worker after it)."""
    monkeypatch.setenv("RAPPORT_RATE_LIMIT_PER_S", "0")
    settings = Settings()
    flood = [{"id": f, "name": f, "email": f"{f}@x.io", "team_id": "flood"} for f in FLOOD]
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as directory:
        people = {"people": PEOPLE + flood}
        assert directory.post("/v1/people/batch", json=people).status_code == 202
    port = free_port()
    worker = spawn("aggregator", log=tmp_path / "aggregator.log",
                   extra_env={"RAPPORT_AGGREGATOR_METRICS_PORT": str(port)})  # fmt: skip
    answers = dict.fromkeys(DEFAULT_DIMENSIONS, 4)
    with TestClient(create_feedback(settings), headers=headers) as feedback:
        for survey in range(45):
            for who in FLOOD:
                body = {"survey_id": f"s{survey}", "respondent_id": who, "answers": answers,
                        "comment": f"{who} {survey} " + "x" * 1990}  # fmt: skip
                assert feedback.post("/v1/survey-responses", json=body).status_code == 202
        for who in MEMBERS[:K]:  # then another team answers
            body = {"survey_id": "s1", "respondent_id": who, "answers": answers}
            assert feedback.post("/v1/survey-responses", json=body).status_code == 202

    def aggregated() -> float:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0
        return parse(text).get('rapport_aggregator_events_total{stage="aggregate"}', 0)

    wait_until(lambda: aggregated() >= 45 * 12 + K, timeout=120)
    with TestClient(create_metrics(settings)) as metrics:
        index = 'rapport_trust_index{team="alpha",window="28d"}'
        wait_until(lambda: index in parse(metrics.get("/metrics").text), timeout=60)
    assert worker.poll() is None  # still running
    dead = asyncio.run(read_all(settings, topics.dlq(topics.SURVEY)))
    assert dead and all(b"is not counted" in dict(r.headers)[DLQ_REASON] for r in dead)
    counted = 45 * 12 - len(dead)
    assert 200 < counted < 45 * 12  # the state stopped growing at its bound, not before
    for record in asyncio.run(read_all(settings, topics.SNAPSHOTS)):
        assert len(record.value) < 1_000_000  # every snapshot is a record the broker takes
