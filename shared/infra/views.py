"""Read a whole topic into memory and keep following it, without a consumer group.

For compacted topics that every replica needs in full: the directory and the team
snapshots. Subclasses decide what a record means in ``apply``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ValidationError

from shared.contract.codec import CodecError, decode
from shared.infra.errors import BrokerUnavailable, NotReady
from shared.infra.gaps import GapGuard
from shared.infra.settings import Settings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
# How long a request waits for a view to catch up: it answers 503 within this (and a
# request reads two views at most) when the broker is gone or a topic is still loading.
SYNC_TIMEOUT_S = 2.0


def read_event(
    model: type[M], key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
) -> M | None:
    """A keyed record's CloudEvent data as ``model``; ``None`` for a tombstone, or (with a
    warning) for a record that cannot be read: one bad record never stops a view."""
    if key is None or value is None:
        return None
    try:
        return model.model_validate(decode(headers, value).data)
    except (CodecError, ValidationError) as exc:
        log.warning("invalid %s record %r ignored: %s", model.__name__, key, exc)
        return None


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The partitions of ``topic``, for a consumer that assigns them itself.

    A started consumer has only asked for no topic's metadata, and Apache Kafka then
    sends none (Tansu sends all). aiokafka's public ``topics()`` fetches metadata without
    keeping it, so this asks its client (internal) to refresh the metadata of every topic.
    """
    for _ in range(100):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            return set(partitions)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"topic {topic} does not exist; run `rapport topics`")


class TopicView(ABC):
    topic: str

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._progress = asyncio.Condition()
        self._positions: dict[TopicPartition, int] = {}
        self._start_lock = asyncio.Lock()
        self._guard = GapGuard() if settings.embedded else None

    @abstractmethod
    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        """Apply one record, in offset order."""

    async def start(self, wait: bool = True) -> None:
        """Start following (once) and, with ``wait``, return when everything already there
        is applied. Without: at once; ``sync`` says when it has caught up (a large topic
        can take minutes, and a service must not fail to start for that)."""
        async with self._start_lock:
            if self._task is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._settings.bootstrap_servers,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    fetch_max_wait_ms=100,  # a view is as fresh as its slowest fetch
                )
                await consumer.start()
                partitions = await partitions_of(consumer, self.topic)
                tps = [TopicPartition(self.topic, p) for p in partitions]
                consumer.assign(tps)
                await consumer.seek_to_beginning()
                if self._guard is not None:
                    for tp in tps:  # Tansu's logs start at 0; its "earliest" can be later
                        self._guard.expect(tp, 0)
                self._consumer = consumer
                self._task = asyncio.create_task(self._run(consumer), name=f"view-{self.topic}")
        if wait:
            await self.sync()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            try:
                await consumer.stop()
            except asyncio.CancelledError:
                # aiokafka re-raises its fetcher's cancellation when the broker is gone;
                # only a cancellation of this task itself must propagate.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise

    async def sync(self, timeout_s: float = SYNC_TIMEOUT_S) -> None:
        """Wait until every record on the topic *now* has been applied.

        Within ``timeout_s``, or raise :class:`BrokerUnavailable` (the broker did not say
        where the topic ends) or :class:`NotReady` (the view has not read that far yet):
        a request never waits on a broker that is gone.
        """
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError(f"view of {self.topic} is not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            # Tansu's end offset can be a batch's base + 1; a fetch returns whole batches,
            # so a position past it has the whole batch (shared.infra.gaps).
            async with asyncio.timeout_at(deadline):
                ends = await consumer.end_offsets(list(consumer.assignment()))
        except (KafkaError, TimeoutError) as exc:
            raise BrokerUnavailable(f"no end offsets of {self.topic}: {exc!r}") from exc

        def caught_up() -> bool:
            return all(self._positions.get(tp, 0) >= end for tp, end in ends.items())

        try:
            async with asyncio.timeout_at(deadline), self._progress:
                await self._progress.wait_for(caught_up)
        except TimeoutError:
            raise NotReady(f"still reading {self.topic}; try again in a moment") from None

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=100)
                for tp, messages in batches.items():
                    reread_from = None
                    if self._guard is not None:
                        messages, reread_from = self._guard.admit(tp, messages)
                    for msg in messages:
                        self.apply(msg.key, msg.headers, msg.value)
                    if reread_from is not None:
                        consumer.seek(tp, reread_from)
                for tp in consumer.assignment():
                    self._positions[tp] = await consumer.position(tp)
            except KafkaError as exc:
                log.warning("reading %s failed, retrying: %r", self.topic, exc)
                await asyncio.sleep(1)
                continue
            async with self._progress:
                self._progress.notify_all()
