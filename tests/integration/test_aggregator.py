"""The aggregator on a real broker: any producer counts, duplicates count once, bad → DLQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen

import httpx
import orjson
from fastapi.testclient import TestClient

from services.recognition.api import create
from shared.contract import topics
from shared.contract.codec import DLQ_REASON, CloudEvent
from shared.contract.events import RECOGNITION_GIVEN
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port
from shared.infra.settings import Settings
from tests.support import wait_until
from tests.support.kafka import (
    kudos_event,
    latest_snapshots,
    produce,
    produce_raw,
    put_people,
    read_all,
)
from tests.support.metrics import parse
from tests.support.people import person, team

PEOPLE = [*team("alpha", "lead", ["ann", "bob"]), person("cid", "beta")]


def test_kafka_and_http_events_aggregate_alike_and_duplicates_count_once(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    asyncio.run(put_people(settings, PEOPLE))
    port = free_port()
    spawn("aggregator", log=tmp_path / "aggregator.log",
          extra_env={"RAPPORT_AGGREGATOR_METRICS_PORT": str(port)})  # fmt: skip
    direct = kudos_event("slack-1", "bob", ["ann", "cid"], "/slack-bot")
    # The same event twice (a producer retry), and a bad record in between.
    asyncio.run(produce(settings, topics.RECOGNITION, [(b"bob", direct)]))
    bad = CloudEvent("bad-1", "/slack-bot", RECOGNITION_GIVEN, datetime.now(UTC), {"x": 1})
    asyncio.run(produce(settings, topics.RECOGNITION, [(b"bob", bad), (b"bob", direct)]))
    # Junk on the internal facts topic: to its DLQ, and the worker goes on.
    asyncio.run(produce_raw(settings, topics.TEAM_FACTS, b'[["not", "a fact"]]'))
    key = ensure_dev_key(settings)
    with TestClient(create(settings), headers={"Authorization": f"Bearer {key}"}) as http:
        body = {"giver_id": "lead", "recipient_ids": ["ann"], "message": "Great demo",
                "values": ["growth"], "event_id": "http-1"}  # fmt: skip
        assert http.post("/v1/recognitions", json=body).status_code == 202
        assert http.post("/v1/recognitions", json=body).status_code == 202  # client retry

    def settled() -> dict[str, dict[str, object]] | None:
        snaps = latest_snapshots(settings)
        alpha = snaps.get("alpha", {})
        return snaps if alpha.get("totals") == {"growth": 2} and "beta" in snaps else None

    snaps = wait_until(settled, timeout=60)
    assert snaps["beta"]["totals"] == {"growth": 1}
    [day] = snaps["alpha"]["days"].values()  # type: ignore[attr-defined]
    assert day["received"] == {"ann": 2}
    assert day["given"] == {"bob": 1, "lead": 1}
    assert day["downward"] == 1  # lead -> ann
    # Who recognized whom, once each, in the givers' team only (the connection figures).
    assert day["links"] == {"bob": {"ann": 1, "cid": 1}, "lead": {"ann": 1}}
    [beta_day] = snaps["beta"]["days"].values()  # type: ignore[attr-defined]
    assert beta_day["cross_team"] == 1 and beta_day["links"] == {}

    [dead] = asyncio.run(read_all(settings, topics.dlq(topics.RECOGNITION)))
    assert dict(dead.headers)["ce_id"] == b"bad-1"
    assert b"giver_id" in dict(dead.headers)[DLQ_REASON]
    assert orjson.loads(dead.value) == {"x": 1}

    [junk] = asyncio.run(read_all(settings, topics.dlq(topics.TEAM_FACTS)))
    assert dict(junk.headers)[DLQ_REASON].startswith(b"unreadable team facts")

    ops = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    assert ops['rapport_aggregator_events_total{stage="fan_out"}'] >= 4  # 3 good, 1 bad
    assert ops['rapport_aggregator_dlq_total{topic="rapport.recognition.v1"}'] == 1
    assert ops['rapport_aggregator_events_total{stage="aggregate"}'] >= 6  # facts
    assert ops["rapport_aggregator_event_time_lag_seconds_count"] >= 3
    assert 'rapport_aggregator_consumer_lag{stage="fan_out"}' in ops

    def all_committed() -> bool:  # measured every 5 s from the group's commits
        ops = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        return all(ops.get(f'rapport_aggregator_committed_lag{{stage="{stage}"}}') == 0
                   for stage in ("fan_out", "forward", "aggregate"))  # fmt: skip

    wait_until(all_committed, timeout=30)


def test_the_same_event_id_counts_once_whatever_else_its_records_say(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    asyncio.run(put_people(settings, PEOPLE))
    port = free_port()
    spawn("aggregator", log=tmp_path / "aggregator.log",
          extra_env={"RAPPORT_AGGREGATOR_METRICS_PORT": str(port)})  # fmt: skip
    yesterday = datetime.now(UTC) - timedelta(days=1)
    key = ensure_dev_key(settings)
    with TestClient(create(settings), headers={"Authorization": f"Bearer {key}"}) as http:
        body = {"giver_id": "bob", "recipient_ids": ["ann"], "message": "Thanks",
                "values": ["growth"]}  # fmt: skip
        # A client posts before midnight and retries after it: another occurred_at.
        first = {**body, "occurred_at": yesterday.isoformat()}
        retry = {**body, "occurred_at": datetime.now(UTC).isoformat()}
        for sent in (first, retry):
            answer = http.post("/v1/recognitions", json=sent, headers={"Idempotency-Key": "k1"})
            assert answer.status_code == 202
        # The same event id with another recipient (another team): still one event.
        for recipient in ("ann", "cid"):
            same_id = {**body, "recipient_ids": [recipient], "event_id": "e2"}
            assert http.post("/v1/recognitions", json=same_id).status_code == 202
    # Straight on the topic, keyed as each producer likes: one event from /slack-bot, two
    # records of it (another recipient, another day), and another event of the same id
    # from another source.
    now = datetime.now(UTC)
    data = {"giver_id": "lead", "recipient_ids": ["ann"], "message": "thanks",
            "values": ["growth"], "channel": "slack", "occurred_at": now.isoformat()}  # fmt: skip
    again = {**data, "recipient_ids": ["cid"], "occurred_at": yesterday.isoformat()}
    records = [
        (b"lead", CloudEvent("s1", "/slack-bot", RECOGNITION_GIVEN, now, data)),
        (b"somewhere-else", CloudEvent("s1", "/slack-bot", RECOGNITION_GIVEN, now, again)),
        (b"lead", CloudEvent("s1", "/survey-tool", RECOGNITION_GIVEN, now, data)),
    ]
    for record in records:  # one at a time: the second may reach its partition first
        asyncio.run(produce(settings, topics.RECOGNITION, [record]))

    def counted() -> dict[str, dict[str, int]]:
        return {t: s["totals"] for t, s in latest_snapshots(settings).items()}  # type: ignore[misc]

    # alpha: k1 (once), e2 (to ann, once), s1 from each source; beta: nothing.
    wait_until(lambda: counted().get("alpha") == {"growth": 4}, timeout=60)
    time.sleep(3)  # nothing late may count a duplicate
    assert counted().get("alpha") == {"growth": 4} and "beta" not in counted()
    ops = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
    assert ops["rapport_aggregator_duplicate_events_total"] == 3
