"""Where the stages write: records to a partition of a topic, and dead letters."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
import orjson
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP, Message

from shared.codec import DLQ_REASON

from .metrics import AggregatorMetrics
from .transport import Store

log = logging.getLogger(__name__)
Sent = Awaitable[Any]  # done once the broker has acknowledged the record


def headers_of(message: Message) -> Sequence[tuple[str, bytes]]:
    """A record's headers, as aiokafka reads them (faust types them more loosely)."""
    return cast(Sequence[tuple[str, bytes]], message.headers or ())


def partitioner(partitions: int) -> Callable[[str], int]:
    """The partition a producer picks for a key among ``partitions`` (murmur2, as Java's)."""
    default = DefaultPartitioner()
    every = list(range(partitions))

    @functools.cache
    def partition_of(key: str) -> int:
        return int(default(key.encode(), every, every))

    return partition_of


class Output:
    """Sends through faust's producer as is: its ``Topic.send`` costs more than a fact's
    processing. Each send returns what to await for the broker's acknowledgement."""

    def __init__(self, app: faust.App, metrics: AggregatorMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Sent:
        return await self.app.producer.send(topic, key, value, partition, None, headers)

    async def changelog(self, store: Store, key: str, value: Any, partition: int) -> Sent:
        """``key``'s new ``value`` in ``store`` (None: deleted) to the table's changelog, on
        the partition of the record that changed it: stream, table and changelog stay
        co-partitioned. JSON, as the table reads it back."""
        store.written(key, partition)
        topic = store.table.changelog_topic.get_topic_name()
        raw = orjson.dumps(value) if value is not None else None
        sent = await self.send(topic, orjson.dumps(key), raw, partition)
        tp = TP(topic, partition)

        def acked(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                store.set_persisted_offset(tp, future.result().offset)

        asyncio.ensure_future(sent).add_done_callback(acked)
        return sent

    async def to_dlq(self, message: Message, reason: str, dlq: str) -> Sent:
        """``message`` as it came, to the dead-letter topic ``dlq``, with the reason."""
        log.warning("record from %s sent to DLQ: %s", message.topic, reason)
        self.metrics.dlq.labels(message.topic).inc()
        headers = [*headers_of(message), (DLQ_REASON, reason.encode())]
        return await self.send(dlq, message.key, message.value, None, headers)
