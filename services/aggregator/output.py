"""Where the stages write: records to a partition of a topic, and dead letters."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
import orjson
from faust.types import TP, Message

from shared.codec import DLQ_REASON
from shared.kafka import partition_for

from . import transport
from .metrics import AggregatorMetrics
from .transport import Store

log = logging.getLogger(__name__)
Sent = Awaitable[Any]  # done once the broker has acknowledged the record


def headers_of(message: Message) -> Sequence[tuple[str, bytes]]:
    """A record's headers, as aiokafka reads them (faust types them more loosely)."""
    return cast(Sequence[tuple[str, bytes]], message.headers or ())


def partitioner(partitions: int) -> Callable[[str], int]:
    """The partition a producer picks for a team id among ``partitions``; remembered, as
    teams are few (an event's key is new each time: ``shared.kafka.partition_for``)."""

    @functools.cache
    def partition_of(team_id: str) -> int:
        return partition_for(team_id.encode(), partitions)

    return partition_of


class Output:
    """Where the stages write.

    ``write`` and ``changelog`` gather records per topic and partition, in order, into
    aiokafka batches that go out together once the stage yields to the event loop: a
    batch's records are one produce batch per partition, not one ``send`` each (about
    25 µs a record, with a future and a callback each; a stage writes a record or more an
    event, one a bucket touched). Each returns what to await for the broker's
    acknowledgement of the batch it is in. Batches go out one flush at a time, so
    records of one partition reach the log in the order they were written.
    ``send`` is faust's producer as is, for the rare records without a partition.
    """

    def __init__(self, app: faust.App, metrics: AggregatorMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._pending: dict[tuple[str, int], list[_Batch]] = {}
        self._flushing = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()  # referenced until done

    def write(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Sent:
        if not self._pending:  # the first since the last flush: flush when the stage yields
            flush = asyncio.create_task(self.flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        batches = self._pending.setdefault((topic, partition), [])
        if not batches or not batches[-1].append(key, value, headers):
            batches.append(_Batch(transport.kafka_producer(self.app).create_batch()))
            if not batches[-1].append(key, value, headers):
                raise ValueError(f"a record of {len(value or b'')} bytes fits no batch")
        return batches[-1].acked

    async def flush(self) -> None:
        """Hand every pending batch to the producer, in the order they were written."""
        async with self._flushing:
            pending, self._pending = self._pending, {}
            for (topic, partition), batches in pending.items():
                for batch in batches:
                    try:
                        producer = transport.kafka_producer(self.app)
                        sent = await producer.send_batch(batch.builder, topic, partition=partition)
                    except Exception as exc:  # the stage awaiting the batch gets it
                        batch.acked.set_exception(exc)
                    else:
                        sent.add_done_callback(batch.done)

    def changelog(self, store: Store, key: str, value: Any, partition: int) -> Sent:
        """``key``'s new ``value`` in ``store`` (None: deleted) to the table's changelog, on
        the partition of the record that changed it: stream, table and changelog stay
        co-partitioned. JSON, as the table reads it back."""
        store.written(key, partition)
        topic = store.table.changelog_topic.get_topic_name()
        raw = orjson.dumps(value) if value is not None else None
        acked = self.write(topic, partition, orjson.dumps(key), raw)
        batch = self._pending[(topic, partition)][-1]
        if batch.store is None:
            batch.store = store  # its offset: that of the batch's last record, once acked
        return acked

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Sent:
        """One record, on the partition the producer picks for ``key``."""
        return await self.app.producer.send(topic, key, value, None, None, headers)

    async def to_dlq(self, message: Message, reason: str, dlq: str) -> Sent:
        """``message`` as it came, to the dead-letter topic ``dlq``, with the reason."""
        log.warning("record from %s sent to DLQ: %s", message.topic, reason)
        self.metrics.dlq.labels(message.topic).inc()
        headers = [*headers_of(message), (DLQ_REASON, reason.encode())]
        return await self.send(dlq, message.key, message.value, headers)


class _Batch:
    """Records of one topic and partition, and the acknowledgement they wait for."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder  # aiokafka's BatchBuilder
        self.acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.store: Store | None = None  # the table whose changelog this is, if one

    def append(self, key: bytes | None, value: bytes | None, headers: Sequence[Any]) -> bool:
        # A list: aiokafka's compiled builder takes no other sequence.
        return self.builder.append(timestamp=None, key=key, value=value,
                                   headers=list(headers)) is not None  # fmt: skip

    def done(self, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            self.acked.cancel()
        elif (exc := sent.exception()) is not None:
            self.acked.set_exception(exc)
        else:
            metadata = sent.result()
            if self.store is not None:
                last = metadata.offset + self.builder.record_count() - 1
                self.store.set_persisted_offset(TP(metadata.topic, metadata.partition), last)
            self.acked.set_result(metadata)
