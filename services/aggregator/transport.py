"""Every reach into faust's, mode's and aiokafka's internals, each with its reason (and a
pin in tests/unit/test_transport.py): input topics read a fetch at a time, a short fetch
wait, an idempotent producer on Apache Kafka, on the embedded broker a consumer that
never moves past a skipped offset (see ``shared.infra.gaps`` for why), tables that know how
far into their changelog they are, and a worker that stops within seconds."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Set
from signal import Signals
from typing import Any, ClassVar

import faust
from aiokafka import TopicPartition
from faust.stores import memory
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, EventT, Message, StoreT

from shared.infra.gaps import GapGuard, log_ends
from shared.infra.logs import quiet_repeats

log = logging.getLogger(__name__)
FETCH_MAX_WAIT_MS = 100
STOP_GRACE_S = 6.0  # after SIGTERM or Ctrl-C, then the worker exits whatever it waits for
# The exit code of a worker stopped in the middle of a batch, or unable to stop cleanly
# (the broker gone): non-zero, so that a supervisor restarts it; the batch is processed
# again by whoever takes the partitions.
EXIT_CUT_SHORT = 3


class ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust fixes it at 1.5 s. aiokafka fetches a partition again only once the
        # fetch in flight returns, and that one may wait on other, idle partitions: each
        # stage could add up to 1.5 s to an event's way to /metrics.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


Lanes = Mapping[str, "asyncio.Queue[list[Message]]"]


class Consumer(driver.Consumer):
    """Hands the messages of the ``lanes`` topics to their queue a fetch at a time.

    faust's own way in is a stream per agent, fed one message at a time through tasks,
    locks and queues: it cost about two thirds of the aggregator's CPU. A lane's reader
    takes the whole fetch and acks each message itself, once its batch is done.
    A full lane holds the fetcher back (its stage is behind), except during a rebalance:
    then the fetch is dropped, as faust drops its streams' buffers, and read again
    from the committed offsets.
    """

    lanes: ClassVar[Lanes] = {}  # set by tune()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waiting: set[tuple[TP, int]] = set()

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109
        taken: dict[str, list[Message]] = defaultdict(list)
        async for tp, message in self._fetch(timeout):
            if tp.topic in self.lanes:
                taken[tp.topic].append(message)
            else:
                yield tp, message  # a table's changelog, say: faust's own way
        if taken:
            puts = [self.lanes[topic].put(messages) for topic, messages in taken.items()]
            await self.wait_first(asyncio.gather(*puts), self.suspend_flow.wait())
            self._taken_in({m.tp for messages in taken.values() for m in messages})

    def _taken_in(self, tps: set[TP]) -> None:
        # What faust's streams record when they take an event: its consumer thread logs
        # an ERROR ("Stream has not started processing", every few seconds) for a
        # partition behind its highwater with no such time for 300 s, as in any long
        # catch-up. Set when a lane accepts a fetch, the check keeps its meaning: a
        # stage that takes nothing for that long.
        now = time.monotonic()
        for tp in tps:
            self.app.monitor.stream_inbound_time[tp] = now

    def _fetch(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        return super().getmany(timeout)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        # faust drops the records it has fetched when a rebalance starts, and reads them
        # again by seeking each partition to its committed offset. aiokafka seeks only
        # where there is a commit past 0, so a partition without one kept its position:
        # the dropped records were never read again (crash test on Apache Kafka: 16
        # records of team facts, some 2,600 recognitions, never counted). Those
        # partitions go back to their start.
        committed = await super().seek_to_committed()
        for tp, offset in committed.items():
            if not offset:
                await self._seek(tp, 0)  # out of range (retention): reset to the earliest
        return committed

    async def _seek(self, partition: TP, offset: int) -> None:
        # faust seeks from its own thread, and aiokafka's seek drops the partition's
        # fetched records from a dict the consumer thread may be going through at that
        # moment: a worker joining under load crashed with a KeyError in aiokafka's
        # ``fetched_records``. The seek runs on the consumer thread, like faust's own
        # ``seek_wait``.
        await self._thread.call_thread(self._seek_on_thread, partition, offset)

    async def _seek_on_thread(self, partition: TP, offset: int) -> None:
        self._thread.seek(partition, offset)

    def _new_offset(self, tp: TP) -> int | None:
        # faust commits past the committed offset C when C is not acked but C + 1 is
        # (it checks ``min(acked) - C > 1``, allowing for compacted topics, and not at
        # all when C is 0). The input topics have no compaction and no transactions, so
        # an unacked C is a message still in a batch: wait for it. On every broker.
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed:
            if (tp, committed) not in self._waiting:
                self._waiting.add((tp, committed))
                log.warning("%s: offset %d not acked yet; commit waits for it", tp, committed)
            return None
        offset: int | None = super()._new_offset(tp)
        return offset


class GapGuardedConsumer(Consumer):
    """Holds back messages after a jump in offsets and re-reads from the gap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = GapGuard()

    async def _fetch(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109
        # Checked where messages are handed over, not where they are fetched:
        # faust drops fetched messages during a rebalance and counts on seeking back
        # to them. One crash-test run lost 17 recognitions that were on the log, in
        # one run of offsets, without Tansu having skipped them.
        reread: dict[TP, int] = {}
        async for tp, message in super()._fetch(timeout):
            if tp in reread:
                continue
            admitted, reread_from = self._guard.admit(tp, (message,))
            if admitted:
                yield tp, message
            if reread_from is not None:
                reread[tp] = reread_from
        for tp, offset in reread.items():
            await self._seek(tp, offset)

    async def _seek(self, partition: TP, offset: int) -> None:
        self._guard.expect(partition, offset)
        await super()._seek(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        for tp, offset in partitions.items():
            self._guard.expect(tp, offset)
        await super().seek_wait(partitions)

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        # What faust recovers a table up to; Tansu's own answer stops short (shared.infra.gaps).
        bootstrap = ",".join(f"{url.host}:{url.port}" for url in self.transport.url)
        ends = await log_ends(
            bootstrap, [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        )
        return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        for tp, offset in committed.items():
            if offset:  # the others were sought to 0, and expected there
                self._guard.expect(tp, offset)
        return committed


class IdempotentProducer(driver.Producer):
    """faust's producer, idempotent with acks=all (faust asks for that only inside
    transactions): a send retried after a lost answer is never written twice. Apache
    Kafka only: the embedded broker has no InitProducerId."""

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class Store(memory.Store[str, Any]):
    """faust's in-memory store, knowing how far into its changelog its data is.

    faust's own answers None to ``persisted_offset``, so each rebalance reads every
    active partition's changelog again from where its last recovery ended: everything
    the worker wrote since (the survivor of a takeover with 1,000,000 events of history
    read for minutes). And when a recovery completes it drops the data of standby
    partitions, so a standby never spares a read. This store's offset per partition is
    that of the last record in its data: applied from the changelog (recovery or
    standby), or written by this worker and acknowledged (``written``, ``acked``). It
    keeps the data of its active and standby partitions, and drops data and offset
    together for the others. ``load`` is how a value read from the changelog is kept
    (as it came, unless the app sets another).
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        self._offsets: dict[TP, int] = {}
        self.load: Callable[[Any], Any] = _as_read

    def apply_changelog_batch(
        self,
        batch: Iterable[EventT[Any]],
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        events = list(batch)
        load = self.load
        super().apply_changelog_batch(events, to_key, lambda raw: load(to_value(raw)))
        for event in events:
            self.set_persisted_offset(event.message.tp, event.message.offset)

    def persisted_offset(self, tp: TP) -> int | None:
        return self._offsets.get(tp)

    def set_persisted_offset(self, tp: TP, offset: int) -> None:
        self._offsets[tp] = max(offset, self._offsets.get(tp, -1))

    def written(self, key: str, partition: int) -> None:
        """This worker changed ``key`` on ``partition`` of the changelog."""
        self._key_partition[key] = partition

    async def on_recovery_completed(self, active_tps: Set[TP], standby_tps: Set[TP]) -> None:
        kept = {tp.partition for tp in active_tps | standby_tps}
        for key, partition in list(self._key_partition.items()):
            if partition not in kept:
                self.data.pop(key, None)
                del self._key_partition[key]
        self._offsets = {tp: o for tp, o in self._offsets.items() if tp.partition in kept}


def _as_read(value: Any) -> Any:
    return value


class Table(faust.Table[str, Any]):
    """A faust table in a :class:`Store` (set as the app's ``Table`` class)."""

    def _new_store(self) -> StoreT[str, Any]:
        return Store("memory://", self.app, self, table_name=self.name, key_type=self.key_type,
                     key_serializer=self.key_serializer, value_type=self.value_type,
                     value_serializer=self.value_serializer, loop=self.loop,
                     options=self.options)  # fmt: skip


def store_of(table: faust.types.TableT[Any, Any]) -> Store:
    """The :class:`Store` of a table the app created (its ``Table`` is :class:`Table`)."""
    store = getattr(table, "data", None)  # faust types tables without it
    if not isinstance(store, Store):
        raise TypeError(f"{table.name}: not a transport.Table (create the app with it)")
    return store


class Worker(faust.Worker):
    """faust's worker, stopped within ``STOP_GRACE_S`` of SIGTERM or SIGINT.

    With the broker gone, faust's stop waits forever for its consumer thread (measured:
    still there after 60 s). mode's Worker turns both signals into ``_schedule_shutdown``;
    a watchdog started there ends the process if the stop takes longer.
    """

    def _schedule_shutdown(self, signal: Signals) -> None:
        if not self._signal_stop_time:
            watchdog = threading.Timer(STOP_GRACE_S, self._cut_short, args=(signal.name,))
            watchdog.daemon = True
            watchdog.start()
        super()._schedule_shutdown(signal)

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        quiet_repeats(logger)

    @staticmethod
    def _cut_short(name: str) -> None:
        log.error("not stopped %.0f s after %s (broker gone?): exiting now", STOP_GRACE_S, name)
        logging.shutdown()
        os._exit(EXIT_CUT_SHORT)


def tune(app: faust.App, embedded: bool, lanes: Lanes) -> None:
    """Make ``app`` consume through these consumers, ``lanes`` their input topics, and
    produce idempotently outside embedded mode (call before it starts)."""
    base = GapGuardedConsumer if embedded else Consumer
    consumer = type("LaneConsumer", (base,), {"lanes": lanes})
    producer = driver.Producer if embedded else IdempotentProducer
    transport = type("Transport", (driver.Transport,), {"Consumer": consumer,
                                                       "Producer": producer})  # fmt: skip
    app.transport = transport(app.conf.broker_consumer, app)


def kafka_producer(app: faust.App) -> Any:
    """The aiokafka producer inside faust's, once the app has started it: ``Output``
    builds produce batches on it (``create_batch``, ``send_batch``), which faust's
    producer does not offer."""
    producer: Any = app.producer  # faust types it as its abstract ProducerT
    return producer._ensure_producer()


def active_partitions(app: faust.App, topic: str) -> set[int]:
    """The partitions of ``topic`` this worker owns as active (not standby)."""
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}
