"""Where the stages write, all through one path: records to a partition of a topic,
table changelogs, dead letters and snapshots, gathered into produce batches."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.types import TP, Message

from shared.contract import topics
from shared.contract.codec import dlq_reason
from shared.infra.kafka import Batches, partition_for

from . import service, transport
from .metrics import AggregatorMetrics
from .records import headers_of
from .transport import Store

log = logging.getLogger(__name__)
Sent = Awaitable[Any]  # done once the broker has acknowledged the record
DLQ_PARTITION = 0  # of topics.DLQ_PARTITIONS


def partitioner(partitions: int) -> Callable[[str], int]:
    """The partition a producer picks for a team id among ``partitions``; remembered, as
    teams are few (an event's key is new each time: ``shared.infra.kafka.partition_for``)."""

    @functools.cache
    def partition_of(team_id: str) -> int:
        return partition_for(team_id.encode(), partitions)

    return partition_of


class Output:
    """Where the stages write: every record is gathered into one produce batch per topic
    and partition (``shared.infra.kafka.Batches``: a stage writes a record or more an
    event, one a bucket touched), which goes out once the stage yields to the event
    loop. What each method returns is done once the broker has acknowledged the record.
    """

    def __init__(
        self, app: faust.App, metrics: AggregatorMetrics, generation: topics.Generation
    ) -> None:
        self.metrics = metrics
        self.generation = generation  # stages name topics as the first one does
        self.batches = Batches(lambda: transport.kafka_producer(app))

    def write(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Sent:
        """One record to ``partition`` of ``topic`` (of this worker's generation)."""
        return self.batches.add(self.generation.of(topic), partition, key, value, headers).acked

    def changelog(
        self, store: Store, key: str, value: Any, partition: int, raw: bytes | None = None
    ) -> Sent:
        """``key``'s new ``value`` in ``store`` (None: deleted) to the table's changelog, on
        the partition of the record that changed it: stream, table and changelog stay
        co-partitioned. JSON, as the table reads it back (``service.to_json``; ``raw``
        if the caller has it already)."""
        store.written(key, partition)
        topic = store.table.changelog_topic.get_topic_name()
        if raw is None and value is not None:
            raw = service.to_json(value)
        batch = self.batches.add(topic, partition, service.to_json(key), raw)
        if batch.records == 1:  # once acknowledged, its last offset is the table's
            tp = TP(topic, partition)

            def persisted(acked: asyncio.Future[Any]) -> None:
                if not acked.cancelled() and acked.exception() is None:
                    store.set_persisted_offset(tp, batch.last_offset())

            batch.acked.add_done_callback(persisted)
        return batch.acked

    def to_dlq(self, message: Message, reason: str, dlq: str) -> Sent:
        """``message`` as it came, to the dead-letter topic ``dlq``, with the reason."""
        log.warning("record from %s sent to DLQ: %s", message.topic, reason)
        self.metrics.dlq.labels(self.generation.logical(message.topic)).inc()
        value = message.value
        if len(value or b"") > service.MAX_RECORD_BYTES:  # near the broker's limit already
            reason += (f" (its {len(value or b'')}-byte value left out: it is at "
                       f"{message.topic}/{message.partition}/{message.offset})")  # fmt: skip
            value = None
        headers = [*headers_of(message), dlq_reason(reason)]
        return self.write(dlq, DLQ_PARTITION, message.key, value, headers)
