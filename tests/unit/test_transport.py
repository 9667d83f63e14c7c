"""Pins what ``services.aggregator.transport`` relies on inside faust, mode and aiokafka.

Each override there replaces or extends a method of a library class: if an upgrade
renames it, changes its parameters or stops calling it, these fail before a worker
quietly runs without the fix. (Behaviours with their own tests: ``_new_offset`` in
test_gaps.py; ``seek_to_committed``, ``_settings_extra`` and the stop watchdog in
test_apache_kafka.py.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.stores.memory import Store as MemoryStore
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from mode import Worker as ModeWorker

from services.aggregator import service, transport
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from shared.contract import topics
from shared.infra.logs import Repeats

OVERRIDES = [
    (transport.ConsumerThread, driver.AIOKafkaConsumerThread, "_create_worker_consumer"),
    (transport.Consumer, driver.Consumer, "_new_consumer_thread"),
    (transport.Consumer, driver.Consumer, "getmany"),
    (transport.Consumer, driver.Consumer, "seek_to_committed"),
    (transport.Consumer, driver.Consumer, "_new_offset"),
    (transport.Consumer, driver.Consumer, "_seek"),
    (transport.GapGuardedConsumer, driver.Consumer, "_seek"),
    (transport.GapGuardedConsumer, driver.Consumer, "seek_wait"),
    (transport.GapGuardedConsumer, driver.Consumer, "highwaters"),
    (transport.IdempotentProducer, driver.Producer, "_settings_extra"),
    (transport.Store, MemoryStore, "apply_changelog_batch"),
    (transport.Store, MemoryStore, "persisted_offset"),
    (transport.Store, MemoryStore, "set_persisted_offset"),
    (transport.Store, MemoryStore, "on_recovery_completed"),
    (transport.Table, faust.Table, "_new_store"),
    (transport.Worker, ModeWorker, "_schedule_shutdown"),
    (transport.Worker, ModeWorker, "on_setup_root_logger"),
]


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    ("ours", "theirs", "name"), OVERRIDES, ids=lambda v: getattr(v, "__name__", v)
)
def test_every_override_still_overrides_a_library_method_of_the_same_shape(
    ours: type, theirs: type, name: str
) -> None:
    assert name in vars(ours), f"{ours.__name__}.{name} is gone: update this list"
    assert callable(getattr(theirs, name, None)), f"{theirs.__name__}.{name} no longer exists"
    assert parameters(getattr(ours, name)) == parameters(getattr(theirs, name))


def test_the_short_fetch_wait_reaches_aiokafkas_fetcher() -> None:
    app = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))

    async def worker_consumer() -> AIOKafkaConsumer:
        thread = app.consumer._new_consumer_thread()
        consumer: AIOKafkaConsumer = thread._create_worker_consumer(app.transport)
        return consumer

    consumer = asyncio.run(worker_consumer())
    assert isinstance(consumer, AIOKafkaConsumer)
    assert consumer._fetch_max_wait_ms == transport.FETCH_MAX_WAIT_MS
    # aiokafka hands the attribute, as it is at start, to the fetcher it creates there.
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_the_app_consumes_and_produces_through_the_tuned_transport() -> None:
    on_kafka = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))
    assert isinstance(on_kafka.consumer, transport.Consumer)
    assert not isinstance(on_kafka.consumer, transport.GapGuardedConsumer)
    assert isinstance(on_kafka.producer, transport.IdempotentProducer)
    assert isinstance(create_app(AggregatorSettings()).consumer, transport.GapGuardedConsumer)


def test_mode_calls_the_root_logger_hook_so_repeated_library_lines_are_held_back() -> None:
    app = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        transport.Worker(app, loglevel="WARNING", quiet=True)._setup_logging()
        added = [h for h in root.handlers if h not in before]
        assert added, "mode no longer sets up the root logger's handler"
        assert any(isinstance(f, Repeats) for h in added for f in h.filters)
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)


def test_output_reaches_aiokafkas_producer_and_its_batches() -> None:
    """``transport.kafka_producer`` and ``output.Output``: the aiokafka producer inside
    faust's, its batch API, and a builder that takes a list of headers."""
    assert "return self._producer" in inspect.getsource(driver.Producer._ensure_producer)
    assert parameters(AIOKafkaProducer.create_batch) == ["self"]
    assert parameters(AIOKafkaProducer.send_batch) == ["self", "batch", "topic", "partition"]
    builder = BatchBuilder(1 << 20, 0)
    assert builder.append(timestamp=None, key=b"k", value=b"v", headers=[("h", b"1")])
    assert builder.record_count() == 1
    with pytest.raises(TypeError):  # why Output hands it a list
        builder.append(timestamp=None, key=b"k", value=b"v", headers=(("h", b"1"),))


def test_a_workers_active_partitions_come_from_faust_assignor() -> None:
    app = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))
    assert transport.active_partitions(app, "rapport.aggregator.team-facts.v1") == set()


def test_faust_judges_a_partition_idle_by_the_time_the_lanes_set() -> None:
    """``transport.Consumer._taken_in`` sets the monitor's ``stream_inbound_time``, which
    faust's consumer thread reads to decide that a partition's stream is stuck."""
    app = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))
    assert isinstance(app.monitor.stream_inbound_time, dict)
    check = inspect.getsource(driver.AIOKafkaConsumerThread.verify_event_path)
    assert "monitor.stream_inbound_time.get(tp)" in check
    tp = TP("rapport.recognition.v1", 3)
    app.consumer._taken_in({tp})
    assert app.monitor.stream_inbound_time[tp] > 0


def test_a_seek_runs_on_the_consumer_thread() -> None:
    """faust seeks by calling the consumer thread's ``seek`` from its own thread, and
    aiokafka's seek deletes from the fetched records the consumer thread goes through:
    ``Consumer._seek`` hands the call to that thread instead."""
    assert "self._thread.seek(partition, offset)" in inspect.getsource(driver.Consumer._seek)
    assert "del self._records[tp]" in inspect.getsource(Fetcher.seek_to)
    consumer = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9")).consumer
    seeks: list[tuple[int, TP, int]] = []

    class ConsumerThread:  # mode's call_thread runs the call on the thread's own loop
        async def call_thread(self, fun: Any, *args: Any) -> Any:
            return await asyncio.to_thread(asyncio.run, fun(*args))

        def seek(self, tp: TP, offset: int) -> None:
            seeks.append((threading.get_ident(), tp, offset))

    consumer._thread = ConsumerThread()
    tp = TP("rapport.recognition.v1", 1)
    asyncio.run(consumer._seek(tp, 42))
    [(thread, sought, offset)] = seeks
    assert (sought, offset) == (tp, 42)
    assert thread != threading.get_ident()


def changelog_event(key: str, value: Any, tp: TP, offset: int) -> Any:
    """A changelog record as faust's recovery hands it to a store."""
    message = SimpleNamespace(tp=tp, partition=tp.partition, offset=offset, value=value)
    return SimpleNamespace(key=key, value=value, message=message)


def test_a_table_recovers_from_where_its_data_ends_and_keeps_its_standbys() -> None:
    """``transport.Store``: faust's recovery starts a partition at the store's
    ``persisted_offset`` (its own in-memory store says None: from the start, every
    time), and its data and offsets stay for active and standby partitions only."""
    app = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))
    table = app.tables[topics.TEAM_DAYS_TABLE]
    store = transport.store_of(table)
    changelog = table.changelog_topic.get_topic_name()
    active, standby, gone = (TP(changelog, p) for p in (0, 1, 2))
    same = lambda x: x  # noqa: E731  # the raw JSON is decoded already here
    store.apply_changelog_batch(
        [changelog_event("t1/d", {"n": 1}, standby, 7), changelog_event("t2/d", {"n": 2}, gone, 3)],
        same,
        same,
    )
    store["t0/d"] = {"n": 0}  # written by this worker (as the stages do), then acknowledged
    store.written("t0/d", 0)
    store.set_persisted_offset(active, 41)
    assert [store.persisted_offset(tp) for tp in (active, standby, gone)] == [41, 7, 3]

    recovery = app.tables.recovery
    recovery.add_active(table, active)
    recovery.add_standby(table, standby)
    assert recovery.active_offsets[active] == 41  # read from the store: no re-read
    assert recovery.standby_offsets[standby] == 7

    asyncio.run(table.on_recovery_completed({active}, {standby}))
    assert dict(store.items()) == {"t0/d": {"n": 0}, "t1/d": {"n": 1}}
    assert store.persisted_offset(gone) is None  # read from the start if it comes back
    assert store.persisted_offset(standby) == 7


def test_the_id_tables_keep_what_they_read_from_the_changelog_in_arrays() -> None:
    """The team-days and event-ids tables keep their ids in ``service.Ids`` (8 bytes an
    id) whether written by this worker or recovered; other tables keep what they read."""
    app = create_app(AggregatorSettings(kafka_bootstrap_servers="127.0.0.1:9"))
    same = lambda x: x  # noqa: E731  # the raw JSON is decoded already here
    for name in (topics.TEAM_DAYS_TABLE, topics.EVENT_IDS_TABLE, topics.TEAM_TRUST_TABLE):
        table = app.tables[name]
        store = transport.store_of(table)
        tp = TP(table.changelog_topic.get_topic_name(), 0)
        entry, chunk = {"fresh": [1, 2], "sealed": 1}, [3, 4]
        store.apply_changelog_batch(
            [changelog_event("k", entry, tp, 1), changelog_event("k#0", chunk, tp, 2)], same, same
        )
        if name == topics.TEAM_TRUST_TABLE:
            assert store["k"] is entry and store["k#0"] is chunk
        else:  # an array equals only an array
            assert store["k"] == {"fresh": service.ids([1, 2]), "sealed": 1}
            assert store["k#0"] == service.ids([3, 4]) and store.persisted_offset(tp) == 2
