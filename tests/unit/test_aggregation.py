"""Fan-out and idempotent per-key aggregation, without Kafka."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson
import pytest

from services.aggregator import service
from shared.contract.events import RecognitionGiven, TeamSnapshot, TeamTrust
from tests.support.people import person, team

PEOPLE = {p.id: p for p in [*team("a", "lead", ["ann", "bob"]), person("cid", "b")]}


def kudos(giver: str, *recipients: str, values: tuple[str, ...] = ("growth",)) -> RecognitionGiven:
    return RecognitionGiven(
        giver_id=giver,
        recipient_ids=recipients,
        message="thanks",
        values=values,
        occurred_at=datetime(2026, 11, 20, 23, 30, tzinfo=UTC),
    )


def test_fan_out_one_fact_per_recipient_plus_giver() -> None:
    facts = service.fan_out("/s", "e1", kudos("lead", "ann", "cid"), PEOPLE.get)
    assert [(f.kind, f.team_id, f.person_id) for f in facts] == [
        ("given", "a", "lead"),
        ("received", "a", "ann"),
        ("received", "b", "cid"),
    ]
    assert facts[1].direction == "downward" and not facts[1].cross_team
    assert facts[2].direction == "peer" and facts[2].cross_team
    assert {f.day for f in facts} == {"2026-11-20"}
    assert len({f.id for f in facts}) == 3


def test_fan_out_upward_and_unknown_people() -> None:
    facts = service.fan_out("/s", "e1", kudos("ann", "lead"), PEOPLE.get)
    assert facts[1].direction == "upward"
    with pytest.raises(service.Unresolvable, match="unknown recipient 'zed'"):
        service.fan_out("/s", "e2", kudos("ann", "zed"), PEOPLE.get)
    with pytest.raises(service.Unresolvable, match="unknown giver"):
        service.fan_out("/s", "e3", kudos("zed", "ann"), PEOPLE.get)


def test_apply_counts_each_fact_once() -> None:
    facts = service.fan_out("/s", "e1", kudos("bob", "ann", values=("growth", "direction")),
                            PEOPLE.get)  # fmt: skip
    seen: set[int] = set()
    bucket = service.apply(None, facts, seen)
    assert bucket is not None
    assert bucket["activity"]["received"] == {"ann": 1}
    assert bucket["activity"]["given"] == {"bob": 1}
    assert bucket["activity"]["values"] == {"growth": 1, "direction": 1}
    # Redelivery of the same event: nothing changes.
    assert service.apply(bucket, facts, seen) is None
    # Same event id from another source is another event.
    other = service.fan_out("/other", "e1", kudos("bob", "ann"), PEOPLE.get)
    bucket = service.apply(bucket, other, seen)
    assert bucket is not None and bucket["activity"]["received"] == {"ann": 2}


def test_apply_survives_a_json_round_trip_as_in_the_changelog() -> None:
    facts = service.fan_out("/s", "e1", kudos("bob", "ann", "cid"), PEOPLE.get)
    written = service.to_json(service.apply(None, facts, set()))
    for stored in (orjson.loads(written), service.compact(orjson.loads(written))):
        assert service.apply(stored, facts, service.seen_ids(stored, {}.__getitem__)) is None
    # Every field comes back; values and recipients as JSON arrays do, lists.
    back = service.loads(service.dumps(facts))
    assert [
        dataclasses.replace(f, values=tuple(f.values), recipients=tuple(f.recipients)) for f in back
    ] == facts
    assert facts[0].recipients == ("ann", "cid") and facts[0].hour == 23


def test_sealed_chunks_keep_every_id_and_the_bucket_small() -> None:
    def facts(first: int, last: int) -> list[service.TeamFact]:
        one = kudos("bob", "ann")
        return [
            f for i in range(first, last) for f in service.fan_out("/s", f"e{i}", one, PEOPLE.get)
        ]

    chunks: dict[int, list[int]] = {}
    bucket: service.Bucket | None = None
    n = 3 * service.CHUNK
    for first in range(0, n, 100):  # in batches, as the worker sees them
        bucket = service.apply(bucket, facts(first, min(n, first + 100)), set())
        assert bucket is not None
        sealed = service.seal(bucket)
        if sealed is not None:
            chunks[sealed[0]] = sealed[1]
        # Recovered from the changelog: the chunks below ``sealed`` and the fresh ids.
        bucket = service.compact(orjson.loads(service.to_json(bucket)))
        assert isinstance(bucket["fresh"], service.Ids)
        assert len(bucket["fresh"]) < service.CHUNK
    assert bucket is not None and bucket["activity"]["received"] == {"ann": n}
    assert sorted(chunks) == list(range(bucket["sealed"])) and bucket["sealed"] == 5
    # Every event again, long after (a producer that retried): nothing counts twice.
    seen = service.seen_ids(bucket, chunks.__getitem__)
    assert len(seen) == 2 * n
    assert service.apply(bucket, facts(0, n), seen) is None
    # A chunk written just before a crash that lost the bucket's write is not read.
    chunks[bucket["sealed"]] = [-1]
    assert -1 not in service.seen_ids(bucket, chunks.__getitem__)


def test_snapshot_totals_all_days_details_recent_ones() -> None:
    old = service.apply(None, service.fan_out("/s", "old", kudos("bob", "ann"), PEOPLE.get), set())
    new = service.apply(None, service.fan_out("/s", "new", kudos("bob", "ann"), PEOPLE.get), set())
    assert old is not None and new is not None
    now = datetime(2026, 11, 22, tzinfo=UTC)
    data = service.build_snapshot("a", {"2025-01-01": old, "2026-11-20": new}, TeamTrust(), now)
    snap = TeamSnapshot.model_validate(data)  # the event's contract shape
    assert snap.totals == {"growth": 2}
    assert list(snap.days) == ["2026-11-20"]
    assert snap.days["2026-11-20"].received == {"ann": 1}


def test_a_snapshot_over_the_record_limit_sheds_its_oldest_comments_then_days() -> None:
    blocks = [{"at": f"2026-11-0{i}T00:00:00Z", "comments": [f"c{i}" * 500]} for i in range(1, 4)]
    days = {f"2026-11-0{i}": {"received": {"p": i}} for i in range(1, 4)}
    data = {"days": dict(days), "trust": {"comments": list(blocks)}}
    assert service.fit_snapshot(data, 10_000) == 0 and data["trust"]["comments"] == blocks
    size = len(orjson.dumps(data))
    over = service.fit_snapshot(data, size - 500)  # less than one block (~1 kB) too many
    assert over == 500 and data["trust"]["comments"] == blocks[1:] and data["days"] == days
    service.fit_snapshot(data, 100)  # without comments: 136 bytes
    assert data["trust"]["comments"] == [] and list(data["days"]) == ["2026-11-03"]
    assert len(orjson.dumps(data)) <= 100


def test_a_bucket_keeps_links_flat_and_the_snapshot_nests_them() -> None:
    facts = service.fan_out("/s", "e1", kudos("lead", "ann", "cid"), PEOPLE.get)
    facts += service.fan_out("/s", "e2", kudos("lead", "ann"), PEOPLE.get)
    facts += service.fan_out("/s", "e3", kudos("bob", "ann"), PEOPLE.get)
    bucket = service.apply(None, [f for f in facts if f.team_id == "a"], set())
    assert bucket is not None
    assert bucket["activity"]["links"] == {"lead ann": 2, "lead cid": 1, "bob ann": 1}
    assert bucket["activity"]["hours"] == {"lead 23": 2, "bob 23": 1}
    # A bucket written before links were flat, given to once more since.
    old = orjson.loads(service.to_json(bucket))
    old["activity"]["links"] = {"lead": {"ann": 5}, "lead ann": 1}
    old["activity"]["hours"] = {"lead": {"22": 5}, "lead 22": 1}
    now = datetime(2026, 11, 21, tzinfo=UTC)
    data = service.build_snapshot("a", {"2026-11-20": bucket, "2026-11-19": old}, TeamTrust(), now)
    day = TeamSnapshot.model_validate(data).days
    assert day["2026-11-20"].links == {"lead": {"ann": 2, "cid": 1}, "bob": {"ann": 1}}
    assert day["2026-11-20"].hours == {"lead": {"23": 2}, "bob": {"23": 1}}
    assert day["2026-11-19"].links == {"lead": {"ann": 6}}
    assert day["2026-11-19"].hours == {"lead": {"22": 6}}


def test_unapply_gives_back_the_bucket_as_it_was() -> None:
    def facts(n: int, start: int) -> list[service.TeamFact]:
        out = []
        for i in range(start, start + n):
            out.append(service.TeamFact(i, "t", "2026-11-10", "given", f"g{i % 3}",
                                        recipients=[f"r{i % 4}", "r9"], hour=i % 24))  # fmt: skip
            direction = ("peer", "upward")[i % 2]
            out.append(service.TeamFact(10_000 + i, "t", "2026-11-10", "received", f"r{i % 4}",
                                        ("growth",), i % 2 == 0, direction))  # fmt: skip
        return out

    seen: set[int] = set()
    bucket = service.apply(None, facts(5, 0), seen)
    assert bucket is not None
    before, seen_before = orjson.loads(service.to_json(bucket)), set(seen)
    more = facts(4, 3)  # two already absorbed, and one twice
    more.append(more[-1])
    fresh = len(bucket["fresh"])
    assert service.apply(bucket, more, seen) is bucket
    assert orjson.loads(service.to_json(bucket)) != before
    service.unapply(bucket, more, seen, fresh)
    assert orjson.loads(service.to_json(bucket)) == before and seen == seen_before


def test_facts_are_written_in_records_under_the_bound() -> None:
    long = "p" * 64
    given = service.TeamFact(1, "t" * 64, "2026-11-10", "given", long,
                             recipients=[f"{long[:-2]}{i:02}" for i in range(20)])  # fmt: skip
    records = service.dumps_within([given] * 2000, limit=256 * 1024)
    assert len(records) > 1 and all(len(r) <= 256 * 1024 for r in records)
    assert sum(len(service.loads(r)) for r in records) == 2000
