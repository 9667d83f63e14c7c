"""The aggregator's writes (``services.aggregator.output``) on a real broker: gathered
into one produce batch per partition, they reach the log in the order written, each
write is acknowledged with its batch, and a table's changelog offset is its last record."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from faust.types import TP
from prometheus_client import CollectorRegistry

from services.aggregator import transport
from services.aggregator.app import create_app
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.output import Output
from shared.contract import topics
from shared.contract.topics import create_topics
from shared.infra.settings import Settings
from tests.support.kafka import read_all


async def write_all(settings: Settings) -> tuple[list[Any], dict[int, int | None]]:
    """Write the team-days changelog across partitions 0 and 1, in several flushes and
    over the size of one batch; return the acknowledgements and the store's offsets."""
    app = create_app(settings, CollectorRegistry())
    await app.producer.start()
    try:
        out = Output(app, AggregatorMetrics(CollectorRegistry()), topics.Generation())
        store = transport.store_of(app.tables[topics.TEAM_DAYS_TABLE])
        big = "x" * 300_000  # four of them are over a produce batch (1 MB)
        acks = []
        for round_ in range(3):
            for i in range(6):
                value = {"round": round_, "i": i, "pad": big if i % 2 else ""}
                acks.append(out.changelog(store, f"t/{i}", value, partition=i % 2))
            await asyncio.sleep(0)  # the stage yields: this round goes out
        done = await asyncio.gather(*acks)
        changelog = topics.changelog(topics.TEAM_DAYS_TABLE)
        return done, {p: store.persisted_offset(TP(changelog, p)) for p in (0, 1)}
    finally:
        await app.producer.stop()


def test_writes_reach_the_log_in_order_and_are_acknowledged_with_their_batch(
    settings: Settings,
) -> None:
    asyncio.run(create_topics(settings))
    acked, offsets = asyncio.run(write_all(settings))
    assert all(a is not None for a in acked)
    records = asyncio.run(read_all(settings, topics.changelog(topics.TEAM_DAYS_TABLE)))
    by_partition: dict[int, list[Any]] = {0: [], 1: []}
    for r in records:
        value = orjson.loads(r.value)
        by_partition[r.partition].append((value["round"], value["i"], orjson.loads(r.key)))
    for p in (0, 1):
        mine = [i for i in range(6) if i % 2 == p]
        assert by_partition[p] == [(r, i, f"t/{i}") for r in range(3) for i in mine]
        # Recovery starts after the last record this worker wrote there.
        assert offsets[p] == max(r.offset for r in records if r.partition == p)
