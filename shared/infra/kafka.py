"""Kafka producer helper: acks=all, idempotence where the broker supports it, batching."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from murmurhash2 import murmurhash2

from shared.contract.codec import CloudEvent, Headers, encode
from shared.infra.errors import BrokerUnavailable
from shared.infra.settings import Settings

log = logging.getLogger(__name__)


# No linger: ``Batches`` already gathers the records concurrent writers add before the
# event loop turns, and aiokafka holds what comes next while a produce request to the
# same broker is in flight. At 2 ms each batch waited for nothing: a single POST under
# 64 connections made 0.52 of the bare endpoint's requests/s, 0.64-0.66 at 0 or 1 ms
# (``python -m tests.bench ingest bare --broker kafka``, three runs each).
LINGER_MS = 0
MURMUR2_SEED = 0x9747B28C  # Java's Utils.murmur2, as aiokafka's pure-Python copy


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions``, as Java's and aiokafka's default
    partitioners pick it (murmur2). In C: aiokafka's own costs 19 µs a key, a fifth of
    an event's whole way through the aggregator (tests/unit/test_kafka.py: the same)."""
    return (murmurhash2(key, MURMUR2_SEED) & 0x7FFFFFFF) % partitions


class Batch:
    """Records of one topic and partition, sent as one produce batch; ``acked`` is done
    (with the batch's ``RecordMetadata``) once the broker has acknowledged them all, or
    failed (``TimeoutError``) once ``timeout_s`` has passed without that."""

    def __init__(self, builder: Any, timeout_s: float | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.builder = builder  # aiokafka's BatchBuilder
        self.acked: asyncio.Future[Any] = loop.create_future()
        # One timer a batch, not one per writer waiting on it.
        self._expiry = loop.call_later(timeout_s, self._expire) if timeout_s else None

    def append(self, key: bytes | None, value: bytes | None, headers: Sequence[Any]) -> bool:
        # A list: aiokafka's compiled builder takes no other sequence.
        return self.builder.append(timestamp=None, key=key, value=value,
                                   headers=list(headers)) is not None  # fmt: skip

    @property
    def records(self) -> int:
        return int(self.builder.record_count())

    def last_offset(self) -> int:
        """The offset of the batch's last record, once acknowledged."""
        return int(self.acked.result().offset) + self.records - 1

    def _expire(self) -> None:
        if not self.acked.done():
            self.acked.set_exception(TimeoutError("no acknowledgement in time"))

    def failed(self, exc: BaseException) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if not self.acked.done():
            self.acked.set_exception(exc)

    def _sent(self, sent: asyncio.Future[Any]) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self.acked.done():  # expired first
            return
        if sent.cancelled():
            self.acked.cancel()
        elif (exc := sent.exception()) is not None:
            self.acked.set_exception(exc)
        else:
            self.acked.set_result(sent.result())


class Batches:
    """Records gathered per topic and partition into aiokafka produce batches, which go
    out together once the writer yields to the event loop.

    One ``send`` a record costs a future, a callback and a partitioner call each (about
    18 µs); a record appended to a batch, about 7 µs, and its writer awaits the batch's
    one acknowledgement. Batches go out one flush at a time, so the records of a
    partition reach the log in the order they were added, whichever writer added them.
    """

    def __init__(
        self, producer: Callable[[], AIOKafkaProducer], timeout_s: float | None = None
    ) -> None:
        self._producer = producer
        self._timeout_s = timeout_s  # of each batch (:class:`Batch`); None: no limit
        self._pending: dict[tuple[str, int], list[Batch]] = {}
        self._flushing = asyncio.Lock()
        self._flushes: set[asyncio.Task[None]] = set()  # referenced until done

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Batch:
        """Add a record; return the batch it is in."""
        if not self._pending:  # the first since the last flush: flush when the writer yields
            flush = asyncio.create_task(self.flush())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        batches = self._pending.setdefault((topic, partition), [])
        if not batches or not batches[-1].append(key, value, headers):
            batches.append(Batch(self._producer().create_batch(), self._timeout_s))
            if not batches[-1].append(key, value, headers):
                raise ValueError(f"a record of {len(value or b'')} bytes fits no batch")
        return batches[-1]

    async def flush(self) -> None:
        """Hand every pending batch to the producer, in the order they were added."""
        async with self._flushing:
            pending, self._pending = self._pending, {}
            for (topic, partition), batches in pending.items():
                for batch in batches:
                    try:
                        producer = self._producer()
                        sent = await producer.send_batch(batch.builder, topic, partition=partition)
                    except Exception as exc:  # whoever awaits the batch gets it
                        batch.failed(exc)
                    else:
                        sent.add_done_callback(batch._sent)


class BrokerRefusedIdempotence(RuntimeError):
    """Outside embedded mode, the broker would not give an idempotent producer."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    partition: int | None = None  # None: the key's partition

    @classmethod
    def of(
        cls, topic: str, key: str | None, event: CloudEvent, partition: int | None = None
    ) -> Record:
        """A CloudEvent in binary content mode, keyed by ``key``."""
        headers, value = encode(event)
        return cls(topic, key.encode() if key is not None else None, value, headers, partition)


class Publisher:
    """Send records and wait for the broker's acknowledgement (acks=all)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._batches: Batches | None = None

    def _make(self, idempotent: bool) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self._settings.bootstrap_servers,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=LINGER_MS,
            request_timeout_ms=int(self._settings.publish_timeout_s * 1000),
            max_batch_size=1 << 20,
        )

    async def start(self) -> None:
        """Connect: idempotent with acks=all on Apache Kafka; acks=all alone on the
        embedded broker, which has no InitProducerId (asking would log an ERROR)."""
        embedded = self._settings.embedded
        producer = self._make(idempotent=not embedded)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            if embedded:
                raise
            raise BrokerRefusedIdempotence(
                f"the broker at {self._settings.bootstrap_servers} refused an idempotent "
                f"producer ({exc!r}): Rapport needs idempotence with acks=all outside "
                "embedded mode, so a retried send is never written twice"
            ) from exc
        self._producer = producer
        self._batches = Batches(lambda: producer, self._settings.publish_timeout_s)

    async def stop(self) -> None:
        """Flush and stop; give up on the flush if the broker is gone."""
        if self._producer is None:
            return
        producer, self._producer = self._producer, None
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                await producer.stop()
        except TimeoutError:
            log.warning("broker unreachable at shutdown; unacknowledged records dropped")

    async def publish(self, records: Sequence[Record]) -> None:
        """Send all records; return once the broker acknowledged every one of them.

        Records of concurrent requests share produce batches (:class:`Batches`); a key
        picks its partition as aiokafka's default partitioner would (:func:`partition_for`).
        """
        if self._producer is None or self._batches is None:
            raise BrokerUnavailable("publisher is not started")
        producer, batches = self._producer, self._batches
        counts = {t: await self._partition_count(producer, t) for t in {r.topic for r in records}}
        try:
            waiting = {
                batches.add(r.topic, self._partition(r, counts[r.topic]), r.key, r.value,
                            r.headers).acked
                for r in records
            }  # fmt: skip
            # Each batch fails by itself after publish_timeout_s. Shielded: a request
            # that gives up must not cancel a batch it shares.
            for acked in waiting:
                await asyncio.shield(acked)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"broker did not acknowledge: {exc!r}") from exc

    async def _partition_count(self, producer: AIOKafkaProducer, topic: str) -> int:
        """From the metadata the producer holds (kept fresh by aiokafka); asked for only
        when it has none for ``topic``."""
        known = producer.client.cluster.partitions_for_topic(topic)
        return len(known) if known else len(await self.partitions(topic))

    @staticmethod
    def _partition(record: Record, partitions: int) -> int:
        if record.partition is not None:
            return record.partition
        if record.key is None:
            raise ValueError(f"a record for {record.topic} names neither key nor partition")
        return partition_for(record.key, partitions)

    async def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, from the broker's metadata."""
        if self._producer is None:
            raise BrokerUnavailable("publisher is not started")
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                return sorted(await self._producer.partitions_for(topic))
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"no metadata for {topic}: {exc!r}") from exc

    async def ping(self) -> bool:
        """Say whether the broker answers a metadata request right now."""
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(2):
                await self._producer.client.fetch_all_metadata()
        except (KafkaError, TimeoutError):
            return False
        return True
