"""The minimum group and its complement: which teams' figures are published at all."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.metrics.collector import AppreciationCollector, TrustCollector
from shared.contract.codec import CloudEvent, encode
from shared.contract.events import DayActivity, Person, TeamSnapshot
from shared.figures.privacy import published
from shared.infra.settings import Settings
from shared.readmodels.directory import DirectoryView, plain
from shared.readmodels.snapshots import SnapshotView

TODAY = date(2026, 11, 10)


@pytest.mark.parametrize(
    ("sizes", "shown"),
    [
        ({"a": 7, "b": 6}, {"a", "b"}),  # nothing hidden
        ({"a": 7, "b": 6, "c": 1}, {"a"}),  # c alone is one person: b (smaller) goes too
        ({"a": 7, "b": 6, "c": 3, "d": 2}, {"a", "b"}),  # c and d hide five people together
        ({"a": 7, "b": 7, "c": 4}, {"b"}),  # a tie: the first by id goes
        ({"a": 5, "c": 2}, set()),  # nothing published rather than c
        ({"a": 4, "b": 1}, set()),
        ({}, set()),
    ],
)
def test_hidden_teams_hold_none_or_at_least_k_people(
    sizes: dict[str, int], shown: set[str]
) -> None:
    assert published(sizes, 5) == shown
    hidden = sum(n for team, n in sizes.items() if team not in shown)
    assert hidden == 0 or hidden >= 5


def test_the_metrics_service_publishes_no_figure_for_a_hidden_team() -> None:
    """A team of one, whose coverage would say whether that person was recognized, and
    a team of seven, whose figures beside the organisation's totals would say the same."""
    directory = DirectoryView(Settings())
    people = [Person(id=f"a{n}", name=f"A {n}", email=f"a{n}@x.io", team_id="alpha")
              for n in range(7)]  # fmt: skip
    people += [Person(id=f"b{n}", name=f"B {n}", email=f"b{n}@x.io", team_id="beta")
               for n in range(8)]  # fmt: skip
    people.append(Person(id="solo", name="Solo", email="solo@x.io", team_id="solo"))
    for p in people:
        directory.put(p.id, plain(p))
    snapshots = SnapshotView(Settings())
    for team, person in (("alpha", "a1"), ("beta", "b1"), ("solo", "solo")):
        day = DayActivity(received={person: 1}, given={"b2": 1}, values={"growth": 1})
        snapshot = TeamSnapshot(team_id=team, generated_at=datetime.now(UTC),
                                totals={"growth": 1}, days={TODAY.isoformat(): day})  # fmt: skip
        headers, value = encode(CloudEvent("e", "/test", "snapshot", datetime.now(UTC),
                                           snapshot.model_dump(mode="json")))  # fmt: skip
        snapshots.apply(team.encode(), headers, value)
    for collector in (AppreciationCollector(directory, snapshots, 5, lambda: TODAY),
                      TrustCollector(directory, snapshots, 5, lambda: TODAY)):  # fmt: skip
        teams = {s.labels["team"] for f in collector.collect() for s in f.samples}
        assert teams <= {"beta"}
    samples = {(s.name, s.labels.get("window")): s.value
               for f in AppreciationCollector(directory, snapshots, 5, lambda: TODAY).collect()
               for s in f.samples}  # fmt: skip
    assert samples[("rapport_team_active_members", None)] == 8
    assert samples[("rapport_recognition_coverage_ratio", "7d")] == pytest.approx(1 / 8)
