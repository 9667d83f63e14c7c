"""Two aggregator workers, one killed with SIGKILL mid-stream: totals stay exact."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest

from shared import topics
from shared.events import Person
from shared.settings import Settings
from tests.conftest import wait_until
from tests.integration.test_aggregator import kudos_event, latest_snapshots
from tests.kafka_helpers import produce, put_people

EVENTS = 20_000
TEAMS = [f"team-{t}" for t in range(10)]
PEOPLE = [
    Person(id=f"u{i}", name=f"U {i}", email=f"u{i}@x.io", team_id=TEAMS[i % len(TEAMS)])
    for i in range(200)
]


def totals(settings: Settings) -> Counter[str]:
    snaps = latest_snapshots(settings)
    return Counter({t: sum(s["totals"].values()) for t, s in snaps.items()})  # type: ignore[attr-defined]


@pytest.mark.slow
def test_sigkill_of_one_worker_mid_stream_keeps_totals_exact(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    asyncio.run(put_people(settings, PEOPLE))
    rng = random.Random(1)
    events, expected = [], Counter[str]()
    for i in range(EVENTS):
        giver, recipient = rng.sample(PEOPLE, 2)
        events.append((giver.id.encode(), kudos_event(f"c{i}", giver.id, [recipient.id], "/load")))
        expected[recipient.team_id] += 1  # one value ("growth") per kudos
    # The victim never commits: its partitions are taken over from no commit at all, as
    # when a worker dies in its first seconds (faust commits every 2.8 s).
    never = {"BROKER_COMMIT_INTERVAL": "3600", "BROKER_COMMIT_EVERY": "100000000"}
    victim = spawn("aggregator", log=tmp_path / "victim.log", extra_env=never)
    spawn("aggregator", log=tmp_path / "survivor.log")
    time.sleep(8)  # both workers in the group before the load starts
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
    assert at_kill < EVENTS  # the kill really came mid-stream
