"""`rapport replay`: every table and snapshot built again from the source topics, into
the next generation's topics beside the current one (``topics.Generation``), and a switch
to them once they have caught up: after a metric's definition changed, say, or to check
that the figures are what the log says.

1. The next generation's topics are created.
2. What cannot be built again is carried over from the current team-trust table (its
   changelog): each team's closed survey rounds (their sums; a round's answers are
   deleted at its close, and the survey topic keeps none longer than
   ``RAPPORT_SURVEY_RETENTION_DAYS``), the comments published with them, and which rounds
   each partition closed (answers to those still on the survey topic are not counted
   again). Open rounds' answers are read again from the survey topic.
3. ``workers`` aggregator workers of the next generation read every source topic from
   its start (recognitions and survey answers; the directory as it is now), and a line
   says how far they are.
4. Once they have caught up, the next generation becomes current: readers of figures (the
   metrics and digest services) switch to its snapshots once they have read them, and
   the workers of the old one stop, to be started again in the new one (``rapport run``
   does; so does any supervisor that restarts what exits). The old generation's topics
   stay, to go back to or to delete.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from shared.contract import topics
from shared.infra.gaps import log_ends
from shared.infra.kafka import Publisher, Record
from shared.infra.settings import Settings
from shared.infra.views import TopicView, partitions_of
from shared.readmodels import generations

from .lag import STAGES, CommittedLag
from .output import partitioner
from .surveys import carried_key, is_team_key

log = logging.getLogger(__name__)
PROGRESS_S = 2.0
STOP_S = 60.0
READ_S = 600.0  # to read the current survey table in full
LIVE_CHECKS = 5  # behind by at most what this many progress lines' worth of load brought
SOURCES = (topics.RECOGNITION, topics.SURVEY)


class Carried(TopicView):
    """The latest value of every key of a team-trust table's changelog that a replay
    cannot build again (the module's step 2)."""

    def __init__(self, settings: Settings, generation: topics.Generation) -> None:
        super().__init__(settings)
        self.topic = generation.changelog(topics.TEAM_TRUST_TABLE)
        self.latest: dict[str, bytes | None] = {}

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if key is None:
            return
        name = orjson.loads(key)
        if isinstance(name, str) and (is_team_key(name) or "#comments|" in name
                                      or name.startswith(("#closed|", "#carried|"))):  # fmt: skip
            self.latest[name] = value


def carried_of(name: str, team_partition: Callable[[str], int]) -> tuple[str, int]:
    """A team-trust key as a replay carries it over, and its partition
    (``services.aggregator.surveys``): the rounds a partition closed become the rounds
    closed there before the replay."""
    if name.startswith(("#closed|", "#carried|")):
        partition = int(name.partition("|")[2])
        return carried_key(partition), partition
    return name, team_partition(name.partition("#")[0])


async def carry_over(settings: Settings, old: topics.Generation, new: topics.Generation) -> int:
    """Copy what a replay cannot build again into ``new``'s team-trust table; return how
    many keys."""
    carried = Carried(settings, old)
    await carried.start(wait=False)
    try:
        await carried.sync(timeout_s=READ_S)  # a large table takes more than a request's wait
    finally:
        await carried.stop()
    changelog = new.changelog(topics.TEAM_TRUST_TABLE)
    team_partition = partitioner(settings.topic_partitions)
    closed: dict[int, dict[str, object]] = {}  # per partition: closed, or carried before
    records = []
    for name, value in carried.latest.items():
        if value is None:
            continue
        key, partition = carried_of(name, team_partition)
        if key.startswith("#carried|"):
            closed.setdefault(partition, {}).update(orjson.loads(value))
            continue
        records.append(Record(changelog, orjson.dumps(key), value, [], partition))
    records += [Record(changelog, orjson.dumps(carried_key(p)), orjson.dumps(rounds), [], p)
                for p, rounds in closed.items()]  # fmt: skip
    publisher = Publisher(settings)
    await publisher.start()
    try:
        for start in range(0, len(records), 500):
            await publisher.publish(records[start : start + 500])
    finally:
        await publisher.stop()
    return len(records)


class Progress:
    """How far a generation's group is: one consumer and one admin client for a whole
    replay, the partitions looked up once."""

    def __init__(self, settings: Settings, generation: topics.Generation) -> None:
        self._bootstrap = settings.bootstrap_servers
        self._generation = generation
        self._lag = CommittedLag(settings, generation)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap)
        self._sources: list[TopicPartition] = []
        self._inputs: list[TopicPartition] = []

    async def start(self) -> None:
        await self._lag.start()
        await self._consumer.start()
        inputs = {self._generation.of(t) for names in STAGES.values() for t in names}
        self._inputs = [TopicPartition(t, p) for t in sorted(inputs)
                        for p in await partitions_of(self._consumer, t)]  # fmt: skip
        self._sources = [tp for tp in self._inputs if tp.topic in SOURCES]

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._lag.stop()

    async def source_records(self) -> int:
        """Records on the source topics now: what a replay reads."""
        starts = await self._consumer.beginning_offsets(self._sources)
        ends = await log_ends(self._bootstrap, self._sources)
        return sum(max(0, ends[tp] - starts[tp]) for tp in self._sources)

    async def lag(self) -> dict[str, int]:
        """Records the generation's group has not committed yet, by stage."""
        return await self._lag.measure(self._inputs)


def start_workers(generation: topics.Generation, count: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "RAPPORT_AGGREGATOR_METRICS_PORT": "0"}  # beside the running ones
    command = [sys.executable, "-m", "services.cli", "aggregator",
               "--generation", str(generation.number)]  # fmt: skip
    return [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(count)]  # fmt: skip


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def replay(settings: Settings, workers: int, say: Callable[[str], None]) -> topics.Generation:
    """Build the next generation, switch to it once caught up; return it."""
    old = await generations.current(settings)
    new = topics.Generation(old.number + 1)
    created = await topics.create_topics(settings, new)
    say(f"generation {new.number}: {len(created)} topics created beside generation {old.number}")
    carried = await carry_over(settings, old, new)
    say(f"carried over {carried} closed-round records of the survey table")
    progress = Progress(settings, new)
    await progress.start()
    total = await progress.source_records()
    started = time.monotonic()
    running = start_workers(new, workers)
    try:
        settled = 0
        while settled < 2:  # caught up twice in a row: the snapshots of the last are out
            await asyncio.sleep(PROGRESS_S)
            if dead := [w.returncode for w in running if w.poll() is not None]:
                raise RuntimeError(f"a replay worker exited (code {dead[0]}); nothing switched")
            now = await progress.source_records()
            arriving, total = max(0, now - total), now  # the live load, meanwhile
            try:
                lag = await progress.lag()
            except KafkaError as exc:  # a group's coordinator, say, not there yet
                say(f"replay to generation {new.number}: progress not known yet ({exc!r})")
                settled = 0
                continue
            behind = sum(lag.values())
            done = max(0, total - lag["fan_out"] - lag["forward"])  # of the source topics
            rate = done / (time.monotonic() - started)
            share = 100 * done / max(total, 1)
            say(f"replay to generation {new.number}: {done:,} of {total:,} source records "
                f"({share:.0f}%), {rate:,.0f}/s, {behind:,} behind")  # fmt: skip
            # Caught up: nothing behind but what the live load brought in the last few
            # checks (a worker commits every few seconds), nothing at all without load.
            settled = settled + 1 if behind <= LIVE_CHECKS * arriving else 0
        publisher = Publisher(settings)
        await publisher.start()
        try:
            await publisher.publish([generations.switched_to(new)])
        finally:
            await publisher.stop()
    finally:
        stop_workers(running)
        await progress.stop()
    took = time.monotonic() - started
    say(f"generation {new.number} is current, {took:.1f} s after the start: readers switch "
        f"to {new.snapshots}; generation {old.number}'s topics stay")  # fmt: skip
    return new
