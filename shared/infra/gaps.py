"""Guard consumers against offsets the embedded broker skips.

Tansu 0.6 with memory storage reserves a batch's offsets before it stores the batch.
With two producers on one partition, a fetch that lands in between returns the later
batch, and the consumer moves past the earlier one for good: a tailing consumer
silently misses records that are on the log (measured: 100 of 40,000 records, in 2
runs of 10). Faust even commits past such a jump, because it treats offset gaps as
compaction.

Tansu's offsets are dense (no compaction, no transactions), so a jump is a skip: the
guard holds back the records after it and re-reads the partition from the gap until
the missing batch is there. Only for the embedded broker: on Apache Kafka gaps are
real (compaction, transaction markers) and none of this is needed.

Tansu also answers a ListOffsets request (``end_offsets``) with the last batch's base
offset + 1, not the end of the log. A consumer that reads until its position passes it
still gets the whole batch (fetches return whole batches), but faust recovering a table
stops applying records at that offset and missed the rest of the batch (crash test: up
to 600 recognitions of one team lost). :func:`log_ends` asks for the high watermark of a
fetch instead, right on any broker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

GRACE_S = 10.0  # a skipped batch shows up within milliseconds; accept a jump after this


class HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=HasOffset)


class GapGuard:
    """Per partition, the next offset a consumer must see."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self._grace_s = grace_s
        self._next: dict[Hashable, int] = {}
        self._since: dict[tuple[Hashable, int], float] = {}

    def expect(self, tp: Hashable, offset: int) -> None:
        """The consumer was positioned at ``offset`` (a seek)."""
        self._next[tp] = offset

    def admit(self, tp: Hashable, records: Sequence[R]) -> tuple[Sequence[R], int | None]:
        """Split ``records`` (one partition, in order) at the first jump.

        Returns the records that may be delivered and, if there was a jump, the offset
        to re-read from (the caller seeks there).
        """
        expected = self._next.get(tp)
        for i, record in enumerate(records):
            if expected is not None and record.offset > expected:
                first_seen = self._since.setdefault((tp, expected), time.monotonic())
                if time.monotonic() - first_seen < self._grace_s:
                    self._next[tp] = expected
                    return records[:i], expected
                log.warning("offsets %d..%d of %s never arrived; going on",
                            expected, record.offset - 1, tp)  # fmt: skip
            if self._since and expected is not None:
                self._since.pop((tp, expected), None)
            expected = record.offset + 1
        if expected is not None:
            self._next[tp] = expected
        return records, None


async def log_ends(
    bootstrap_servers: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition (see the module's docstring)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = dict(await consumer.end_offsets(list(tps)))
        for tp, end in ends.items():
            if end > 0:  # fetch the last batch: its response carries the high watermark
                consumer.assign([tp])
                consumer.seek(tp, end - 1)
                await consumer.getmany(tp, timeout_ms=1000)
                ends[tp] = max(end, consumer.highwater(tp) or 0)
        return ends
    finally:
        await consumer.stop()
