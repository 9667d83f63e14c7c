"""Faults on a three-node Apache Kafka (replication 3, min.insync.replicas 2), with exact
totals: a broker killed under HTTP load."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.contract import topics
from shared.devtools.apache_kafka import KafkaCluster
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import wait_for_port
from shared.infra.settings import Settings
from tests.support.kafka import put_people, totals
from tests.support.people import spread
from tests.support.services import rapport_env

POSTS = 20_000
PER_REQUEST = 20  # recognitions in one POST /v1/recognitions/batch
CLIENTS = 16  # connections posting at once
PEOPLE = spread(200, teams=10)


@pytest.fixture
def env(kafka_cluster: KafkaCluster, tmp_path: Path) -> dict[str, str]:
    """Every process of these tests on the three nodes, each topic on all three."""
    return {**rapport_env("kafka", kafka_cluster.bootstrap_servers, tmp_path, nodes=3),
            "RAPPORT_RATE_LIMIT_PER_S": "0"}  # fmt: skip


async def busiest_leader(settings: Settings) -> int:
    """The node that leads the most partitions of the recognition topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        [topic] = await admin.describe_topics([topics.RECOGNITION])
        leaders = Counter(p["leader"] for p in topic["partitions"])
        return int(leaders.most_common(1)[0][0])
    finally:
        await admin.close()


class Client:
    """Posts recognitions as an internal app would, a batch at a time: a 503 is tried
    again after its Retry-After, with the same event ids; anything but 202 or 503 is a
    failure. A batch that met the broker's failure may have landed in part: its retry
    must count each recognition once."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=CLIENTS),
            timeout=30,
        )
        self.accepted = 0
        self.unavailable = 0
        self.without_retry_after = 0
        self.other: Counter[int] = Counter()

    async def post(self, batch: list[dict[str, object]]) -> None:
        while True:
            response = await self.http.post("/v1/recognitions/batch",
                                            json={"recognitions": batch})  # fmt: skip
            if response.status_code == 202:
                self.accepted += len(batch)
                return
            if response.status_code != 503:
                self.other[response.status_code] += 1
                return
            self.unavailable += 1
            if "Retry-After" not in response.headers:
                self.without_retry_after += 1
            await asyncio.sleep(min(float(response.headers.get("Retry-After", 1)), 2.0))

    async def post_all(self, bodies: list[dict[str, object]]) -> None:
        queue = asyncio.Queue[list[dict[str, object]]]()
        for i in range(0, len(bodies), PER_REQUEST):
            queue.put_nowait(bodies[i : i + PER_REQUEST])

        async def worker() -> None:
            while not queue.empty():
                await self.post(queue.get_nowait())

        async with self.http:
            await asyncio.gather(*(worker() for _ in range(CLIENTS)))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_killing_the_leading_broker_under_http_load_loses_and_doubles_nothing(
    kafka_cluster: KafkaCluster,
    settings: Settings,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
) -> None:
    asyncio.run(put_people(settings, PEOPLE))
    rng = random.Random(2)
    bodies, expected = [], Counter[str]()
    for i in range(POSTS):
        giver, recipient = rng.sample(PEOPLE, 2)
        bodies.append({"giver_id": giver.id, "recipient_ids": [recipient.id], "message": "thanks",
                       "values": ["growth"], "event_id": f"h{i}"})  # fmt: skip
        expected[recipient.team_id] += 1
    key = ensure_dev_key(settings)
    spawn("recognition", log=tmp_path / "recognition.log")
    spawn("aggregator", log=tmp_path / "aggregator.log")
    wait_for_port(settings.recognition_port, timeout=60)
    victim = asyncio.run(busiest_leader(settings))
    client = Client(f"http://127.0.0.1:{settings.recognition_port}", key)

    async def load_and_kill() -> int:
        posting = asyncio.create_task(client.post_all(bodies))
        while client.accepted < POSTS // 4 and not posting.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        accepted_at_kill = client.accepted
        await asyncio.to_thread(kafka_cluster.kill, victim)
        while not posting.done():  # progress, for whoever watches a slow run
            print(f"{client.accepted} accepted, {client.unavailable} 503s", flush=True)
            await asyncio.wait([posting], timeout=5)
        await posting
        return accepted_at_kill

    at_kill = asyncio.run(load_and_kill())
    print(f"node {victim} killed after {at_kill} of {POSTS} recognitions; "
          f"503s retried: {client.unavailable}")  # fmt: skip
    assert at_kill < POSTS  # the kill came in the middle of the load
    assert client.other == {} and client.without_retry_after == 0
    assert client.accepted == POSTS

    deadline = time.monotonic() + 180
    while totals(settings) != expected and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(3)  # nothing late may push a team past its exact total
    final = totals(settings)
    assert final == expected, {t: (final[t], n) for t, n in expected.items() if final[t] != n}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_lost_quorum_answers_503_and_the_same_batch_retried_later_counts_once(
    kafka_cluster: KafkaCluster,
    settings: Settings,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
) -> None:
    """Two of three nodes gone: neither a quorum nor two in-sync copies. A POST gets 503
    with Retry-After (never a 202 that is lost later, never a 500); once the nodes are
    back, the client's retry of the same batch gets 202 and every recognition counts once."""
    asyncio.run(put_people(settings, PEOPLE))
    key = ensure_dev_key(settings)
    spawn("recognition", log=tmp_path / "recognition.log")
    spawn("aggregator", log=tmp_path / "aggregator.log")
    wait_for_port(settings.recognition_port, timeout=60)
    url = f"http://127.0.0.1:{settings.recognition_port}/v1/recognitions/batch"
    auth = {"Authorization": f"Bearer {key}"}
    expected = Counter[str]()

    def batch(prefix: str) -> dict[str, object]:
        bodies = []
        for i, (giver, recipient) in enumerate(itertools.pairwise(PEOPLE[:51])):
            bodies.append({"giver_id": giver.id, "recipient_ids": [recipient.id],
                           "message": "thanks", "values": ["growth"],
                           "event_id": f"{prefix}{i}"})  # fmt: skip
            expected[recipient.team_id] += 1
        return {"recognitions": bodies}

    assert httpx.post(url, json=batch("before-"), headers=auth, timeout=30).status_code == 202
    kafka_cluster.kill(2)
    kafka_cluster.kill(3)
    during = batch("during-")
    refused = httpx.post(url, json=during, headers=auth, timeout=60)
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"] == "broker_unavailable"

    for node in (2, 3):
        kafka_cluster.start_node(node)
    kafka_cluster.wait_ready()
    deadline = time.monotonic() + 120
    while (answer := httpx.post(url, json=during, headers=auth, timeout=60)).status_code != 202:
        assert answer.status_code == 503, answer.text  # only "not yet", while it recovers
        assert time.monotonic() < deadline, "the cluster came back, the service did not"
        time.sleep(int(answer.headers["Retry-After"]))

    deadline = time.monotonic() + 120
    while totals(settings) != expected and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(3)  # nothing late may push a team past its exact total
    assert totals(settings) == expected
