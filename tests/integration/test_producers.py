"""Producers nobody here wrote: the Node.js example (kafkajs with the CloudEvents SDK, in
binary and structured mode) counts exactly, each record on the partition Rapport reads
its event on; a time without its offset goes to the DLQ with a one-line reason; and
librdkafka (2.16, through confluent-kafka) puts each record there with
``partitioner=murmur2_random``, not with its default."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from subprocess import Popen

from aiokafka import AIOKafkaProducer
from confluent_kafka import Producer, libversion

from shared.contract import topics
from shared.contract.codec import DLQ_REASON, CloudEvent, decode, encode
from shared.contract.events import RECOGNITION_GIVEN
from shared.infra.kafka import partition_for
from shared.infra.settings import Settings
from tests.support import ROOT, wait_until
from tests.support.kafka import put_people, read_all
from tests.support.people import person

EXAMPLE = ROOT / "docs" / "examples" / "node-producer"
PEOPLE = [person("ann", "alpha"), person("bob", "alpha"), person("cid", "beta")]


def recognition(event_id: str, giver: str, recipient: str) -> dict[str, object]:
    when = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    return {"id": event_id, "source": "/hr-portal", "giver_id": giver,
            "recipient_ids": [recipient], "message": "thanks", "values": ["growth"],
            "occurred_at": when}  # fmt: skip


def node_produce(settings: Settings, tmp_path: Path, items: list[dict[str, object]],
                 *flags: str) -> str:  # fmt: skip
    assert (EXAMPLE / "node_modules").exists(), "`make test` installs it with npm ci"
    file = tmp_path / f"recognitions{len(flags)}.json"
    file.write_text(json.dumps(items))
    done = subprocess.run(
        ["node", str(EXAMPLE / "produce.mjs"), str(file), *flags],
        env={**os.environ, "KAFKA_BROKERS": settings.bootstrap_servers},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def totals(settings: Settings) -> dict[str, object]:
    records = asyncio.run(read_all(settings, topics.SNAPSHOTS))
    return {r.key.decode(): decode(r.headers, r.value).data["totals"] for r in records}


def test_the_node_example_counts_exactly_on_rapports_partitions(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    asyncio.run(put_people(settings, PEOPLE))
    binary = [recognition("n1", "ann", "bob"), recognition("n2", "bob", "ann"),
              recognition("n3", "ann", "cid")]  # fmt: skip
    out = node_produce(settings, tmp_path, binary)
    assert "3 recognitions acknowledged" in out
    # Structured mode: one new event, and n1 again (a retry in another form counts once).
    node_produce(settings, tmp_path, [recognition("n4", "cid", "ann"), binary[0]],
                 "--structured")  # fmt: skip
    # A time without its offset: in which zone? Refused to the DLQ, with its reason.
    naive = CloudEvent("naive-1", "/hr-portal", RECOGNITION_GIVEN, datetime.now(UTC),
                       recognition("naive-1", "ann", "bob"))  # fmt: skip
    headers, value = encode(naive)
    headers = [(k, b"2026-12-01T09:30:00" if k == "ce_time" else v) for k, v in headers]
    asyncio.run(_produce(settings, headers, value))

    records = asyncio.run(read_all(settings, topics.RECOGNITION))
    assert len(records) == 6
    n = settings.topic_partitions
    for record in records:  # where Rapport itself would have put each event
        assert record.key is not None and record.partition == partition_for(record.key, n)

    spawn("aggregator", log=tmp_path / "aggregator.log")
    # ann 2 (n2, n4), bob 1 (n1), in alpha; cid 1 (n3) in beta: n1 once, the naive one nowhere.
    wait_until(lambda: totals(settings) == {"alpha": {"growth": 3}, "beta": {"growth": 1}}
               or None, timeout=60)  # fmt: skip
    [dead] = wait_until(lambda: asyncio.run(read_all(settings, topics.dlq(topics.RECOGNITION))))
    reason = dict(dead.headers)[DLQ_REASON]
    assert b"no time-zone offset" in reason and b"\n" not in reason
    assert asyncio.run(read_all(settings, topics.EVENTS)) == []  # no record took a hop


async def _produce(settings: Settings, headers: list[tuple[str, bytes]], value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        await (await producer.send(topics.RECOGNITION, value, key=b"/hr-portal|naive-1",
                                   headers=headers))  # fmt: skip
    finally:
        await producer.stop()


def test_librdkafka_puts_records_on_rapports_partitions_with_murmur2_random(
    settings: Settings,
) -> None:
    version = tuple(int(part) for part in libversion()[0].split(".")[:2])
    assert version >= (2, 2)  # older ones misread the embedded broker (README)
    keys = [f"/hr-portal|k{i}".encode() for i in range(12)]
    n = settings.topic_partitions

    def partitions(partitioner: str | None) -> dict[bytes, int]:
        config = {"bootstrap.servers": settings.bootstrap_servers, "acks": "all"}
        if partitioner is not None:
            config["partitioner"] = partitioner
        producer, landed = Producer(config), {}
        for key in keys:
            event = CloudEvent(key.decode(), "/hr-portal", RECOGNITION_GIVEN, datetime.now(UTC),
                               recognition(key.decode(), "ann", "bob"))  # fmt: skip
            headers, value = encode(event)
            producer.produce(topics.RECOGNITION, value, key=key, headers=headers,
                             on_delivery=lambda err, msg: landed.update(
                                 {msg.key(): msg.partition() if err is None else err}))  # fmt: skip
        assert producer.flush(30) == 0
        return landed

    rapports = {k: partition_for(k, n) for k in keys}
    assert partitions("murmur2_random") == rapports
    # librdkafka's default (consistent_random, CRC32) puts some elsewhere: an extra hop.
    assert partitions(None) != rapports
