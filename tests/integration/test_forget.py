"""A closed round's individual answers and respondent key, and an erased person's data key,
the key of their answer to an open round and their named directory entry, physically
leave Apache Kafka's disks within ``forget_within_s`` (compaction, measured on the
broker's own files).

Only on Apache Kafka: the embedded broker keeps everything in memory and never compacts
(where the key is a file, deleted at close: tests/integration/test_feedback_api.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import orjson
import pytest
from fastapi.testclient import TestClient

from services.feedback.api import create as create_feedback
from services.recognition.api import create as create_recognition
from shared.contract import topics
from shared.devtools.apache_kafka import KafkaCluster
from shared.infra.auth import ensure_dev_key
from shared.infra.settings import DEFAULT_DIMENSIONS, Settings
from shared.readmodels.rounds import token
from tests.support import wait_until
from tests.support.kafka import read_all
from tests.support.people import as_json, team

log = logging.getLogger(__name__)
FORGET_S = 20
PEOPLE = as_json(team("alpha", "lead", ["ann", "bob", "cat", "dan", "eve"]))


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "RAPPORT_FORGET_WITHIN_S": str(FORGET_S)}


def on_disk(cluster: KafkaCluster, topic: str, needle: bytes) -> list[str]:
    """The files of ``topic``'s partitions (every file: segments, indexes, files being
    cleaned or waiting for deletion) that hold ``needle``."""
    found = []
    for node in cluster.nodes:
        for directory in (node.directory / "data").glob(f"{topic}-*"):
            if not directory.name.removeprefix(f"{topic}-").isdigit():
                continue  # a deleted topic's directory, from another test
            for f in directory.iterdir():
                try:
                    if needle in f.read_bytes():
                        found.append(str(f.relative_to(node.directory)))
                except FileNotFoundError:
                    continue  # deleted as we looked
    return found


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
def test_a_closed_rounds_answers_and_key_leave_the_disks_in_bounded_time(
    settings: Settings,
    kafka: KafkaCluster,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
) -> None:
    assert settings.forget_within_s == FORGET_S
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as http:
        assert http.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
    spawn("aggregator", log=tmp_path / "aggregator.log")
    trust = topics.changelog(topics.TEAM_TRUST_TABLE)
    with TestClient(create_feedback(settings), headers=headers) as feedback:
        assert feedback.post("/v1/survey-rounds", json={"survey_id": "s1"}).status_code == 202
        key = feedback.app.state.rounds.keys.get("s1")  # type: ignore[attr-defined]
        for who in ("ann", "bob", "cat", "dan", "eve"):
            body = {"survey_id": "s1", "respondent_id": who,
                    "answers": dict.fromkeys(DEFAULT_DIMENSIONS, 4)}  # fmt: skip
            answered = feedback.post("/v1/survey-responses", json=body,
                                     headers={"Idempotency-Key": f"forget-me-{who}"})  # fmt: skip
            assert answered.status_code == 202, answered.text
        # Each answer is a unit in the team-trust table, and so on its changelog's disk.
        wait_until(lambda: len(on_disk(kafka, trust, b"forget-me-")) > 0, timeout=60)
        assert on_disk(kafka, topics.ROUNDS, key.hex().encode())
        assert feedback.post("/v1/survey-rounds/s1/close").status_code == 202
        closed = time.monotonic()

    def gone() -> bool:
        return not on_disk(kafka, trust, b"forget-me-") and not on_disk(
            kafka, topics.ROUNDS, key.hex().encode()
        )

    wait_until(gone, timeout=FORGET_S + 60, interval=0.5)
    took = time.monotonic() - closed
    log.warning("answers and key gone from disk %.1f s after the close", took)
    # Half of it to be compactable, a quarter for a tick to roll the segment, then a pass
    # of the log cleaner (every 15 s) and the old file's deletion (5 s).
    assert took < FORGET_S + 15 + 5 + 5


@pytest.mark.parametrize("broker", ["kafka"], indirect=True)
def test_an_erased_persons_keys_and_named_entry_leave_the_disks_in_bounded_time(
    settings: Settings,
    kafka: KafkaCluster,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
) -> None:
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    spawn("aggregator", log=tmp_path / "aggregator.log")  # its ticks roll the segments
    with TestClient(create_recognition(settings), headers=headers) as http:
        assert http.post("/v1/people/batch", json={"people": PEOPLE}).status_code == 202
        with TestClient(create_feedback(settings), headers=headers) as feedback:
            opened = feedback.post("/v1/survey-rounds", json={"survey_id": "erasure"})
            assert opened.status_code == 202
            round_key = feedback.app.state.rounds.keys.get("erasure")  # type: ignore[attr-defined]
            body = {"survey_id": "erasure", "respondent_id": "ann",
                    "answers": dict.fromkeys(DEFAULT_DIMENSIONS, 4)}  # fmt: skip
            assert feedback.post("/v1/survey-responses", json=body).status_code == 202
        [key] = wrapped(settings, topics.SUBJECT_KEYS, "ann")
        [answer_key] = wrapped(settings, topics.RESPONSE_KEYS, token(round_key, "ann"))
        [entry] = [orjson.loads(r.value)["sealed_contact"]
                   for r in asyncio.run(read_all(settings, topics.DIRECTORY))
                   if r.key == b"ann"]  # fmt: skip
        needles = {topics.SUBJECT_KEYS: key, topics.RESPONSE_KEYS: answer_key,
                   topics.DIRECTORY: entry}  # fmt: skip

        def on_disks() -> list[str]:
            return [t for t, needle in needles.items() if on_disk(kafka, t, needle.encode())]

        # Her wrapped keys, and the entry that named her, on the disks.
        wait_until(lambda: len(on_disks()) == len(needles), timeout=30)
        erased = time.monotonic()
        assert http.post("/v1/people/ann/erasure").status_code == 202

    wait_until(lambda: not on_disks(), timeout=FORGET_S + 60, interval=0.5)
    took = time.monotonic() - erased
    log.warning("an erased person's keys and named entry gone from disk %.1f s after", took)
    assert took < FORGET_S + 15 + 5 + 5  # as for a closed round, above


def wrapped(settings: Settings, topic: str, owner: str) -> list[str]:
    """The wrapped keys of ``owner`` (a person, or a respondent's token) on ``topic``."""
    records = asyncio.run(read_all(settings, topic))
    return [orjson.loads(r.value)["wrapped"] for r in records
            if r.value is not None and orjson.loads(r.value)["person_id"] == owner]  # fmt: skip
