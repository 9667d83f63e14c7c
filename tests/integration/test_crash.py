"""Two aggregator workers, one killed with SIGKILL mid-stream: totals stay exact."""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

from services.aggregator import transport
from shared.contract import topics
from shared.contract.codec import decode
from shared.infra.broker import free_port
from shared.infra.settings import Settings
from tests.support import wait_until
from tests.support.kafka import kudos_event, latest_snapshots, produce, put_people, read_all, totals
from tests.support.metrics import scrape
from tests.support.people import spread

EVENTS = 20_000

PEOPLE = spread(200, teams=10)
PARTITIONS = "rapport_aggregator_partitions"


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """Six partitions: faust's assignor keeps a worker's partitions while it holds no more
    than ceil(partitions / workers), so with four, a third worker that joins after two
    have split them 2 + 2 gets none; with six, any three share 2 + 2 + 2."""
    return {**env, "RAPPORT_TOPIC_PARTITIONS": "6"}


def metrics(port: int) -> dict[str, str]:
    return {"RAPPORT_AGGREGATOR_METRICS_PORT": str(port)}


def share(settings: Settings, ports: list[int]) -> bool:
    """Whether the workers serving /metrics on ``ports`` each own some of the partitions,
    all of them between them (each says so once its tables are recovered)."""
    owned = [scrape(f"http://127.0.0.1:{p}/metrics").get(PARTITIONS, 0) for p in ports]
    return all(owned) and sum(owned) == settings.topic_partitions


def links(settings: Settings) -> Counter[tuple[str, str]]:
    """Recognitions per (giver, recipient) in every team's snapshot: what the connection
    figures and gaming signals are computed from."""
    found = Counter[tuple[str, str]]()
    for snapshot in latest_snapshots(settings).values():
        for day in snapshot["days"].values():  # type: ignore[attr-defined]
            for giver, recipients in day["links"].items():
                found.update({(giver, r): n for r, n in recipients.items()})
    return found


@pytest.mark.slow
@pytest.mark.kafka_nodes(3)
def test_sigkill_of_one_worker_mid_stream_keeps_totals_exact(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    asyncio.run(put_people(settings, PEOPLE))
    rng = random.Random(1)
    events, expected, expected_links = [], Counter[str](), Counter[tuple[str, str]]()
    for i in range(EVENTS):
        giver, recipient = rng.sample(PEOPLE, 2)
        events.append((giver.id.encode(), kudos_event(f"c{i}", giver.id, [recipient.id], "/load")))
        expected[recipient.team_id] += 1  # one value ("growth") per kudos
        expected_links[(giver.id, recipient.id)] += 1
    # The victim never commits: its partitions are taken over from no commit at all, as
    # when a worker dies in its first seconds (faust commits every 2.8 s).
    never = {"BROKER_COMMIT_INTERVAL": "3600", "BROKER_COMMIT_EVERY": "100000000"}
    ports = [free_port(), free_port()]
    victim = spawn(
        "aggregator", log=tmp_path / "victim.log", extra_env={**never, **metrics(ports[0])}
    )
    spawn("aggregator", log=tmp_path / "survivor.log", extra_env=metrics(ports[1]))
    wait_until(lambda: share(settings, ports), timeout=60)  # both in the group before the load
    half = EVENTS // 2
    asyncio.run(produce(settings, topics.RECOGNITION, events[:half]))
    wait_until(lambda: sum(totals(settings).values()) > 1000, timeout=120)
    victim.send_signal(signal.SIGKILL)
    at_kill = sum(totals(settings).values())
    # Redeliveries on top of the rest: the producer retried some events.
    asyncio.run(produce(settings, topics.RECOGNITION, events[half:] + events[:2000]))
    deadline = time.monotonic() + 120
    while totals(settings) != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # nothing late may push a team past its exact total
    final = totals(settings)
    differ = {t: (final[t], n) for t, n in expected.items() if final[t] != n}
    assert not differ, f"(counted, expected) per team: {differ}"
    assert links(settings) == expected_links  # connection figures: exact too
    assert at_kill < EVENTS  # the kill really came mid-stream


def totals_in_log_order(settings: Settings) -> dict[str, list[int]]:
    """Each team's total in every snapshot, in the order they were published."""
    sequence: dict[str, list[int]] = {}
    for r in asyncio.run(read_all(settings, topics.SNAPSHOTS)):
        data = decode(r.headers, r.value).data
        sequence.setdefault(r.key.decode(), []).append(sum(data["totals"].values()))
    return sequence


@pytest.mark.slow
@pytest.mark.kafka_nodes(3)
def test_workers_joining_and_leaving_under_load_keep_totals_exact_and_never_go_back(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    asyncio.run(put_people(settings, PEOPLE))
    rng = random.Random(3)
    events, expected, expected_links = [], Counter[str](), Counter[tuple[str, str]]()
    for i in range(EVENTS):
        giver, recipient = rng.sample(PEOPLE, 2)
        events.append((giver.id.encode(), kudos_event(f"j{i}", giver.id, [recipient.id], "/load")))
        expected[recipient.team_id] += 1
        expected_links[(giver.id, recipient.id)] += 1

    def load() -> None:  # about 30 s of steady load, across every rebalance below
        for i in range(0, EVENTS, 500):
            asyncio.run(produce(settings, topics.RECOGNITION, events[i : i + 500]))
            time.sleep(0.75)

    ports = [free_port() for _ in range(3)]
    spawn("aggregator", log=tmp_path / "first.log", extra_env=metrics(ports[0]))
    wait_until(lambda: share(settings, ports[:1]), timeout=60)  # one worker in the group
    producer = threading.Thread(target=load)
    producer.start()
    wait_until(lambda: sum(totals(settings).values()) > 0, timeout=60)
    joined = [spawn("aggregator", log=tmp_path / f"joined-{n}.log", extra_env=metrics(port))
              for n, port in ((2, ports[1]), (3, ports[2]))]  # 1 -> 3  # fmt: skip
    wait_until(lambda: share(settings, ports), timeout=60)  # the three share, the load goes on
    for worker in joined:  # 3 -> 1
        worker.send_signal(signal.SIGTERM)
    for worker in joined:  # a clean stop, or one cut short in a batch processed again
        assert worker.wait(timeout=30) in (0, transport.EXIT_CUT_SHORT)
    producer.join()
    wait_until(lambda: totals(settings) == expected, timeout=120)
    time.sleep(3)  # nothing late may push a team past its exact total
    assert totals(settings) == expected and links(settings) == expected_links
    # Two workers never published one team at once: its figures never went back.
    for team, seen in totals_in_log_order(settings).items():
        assert seen == sorted(seen), (team, [b for a, b in itertools.pairwise(seen) if b < a])
