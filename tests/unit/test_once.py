"""Once per event: verdicts, the day entries and their chunks, the horizon."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from services.aggregator import once, service


def test_a_record_again_is_fanned_out_again_and_another_record_is_a_duplicate() -> None:
    seen = once.SeenEvents({}, horizon_days=8)
    event = once.event_hash("/slack-bot", "s1")
    first = once.record_hash(b'{"recipient_ids": ["ann"]}', [("ce_id", b"s1")])
    other = once.record_hash(b'{"recipient_ids": ["cid"]}', [("ce_id", b"s1")])
    assert seen.verdict(0, event, first) == "new"
    seen.add(0, event, first)
    assert seen.verdict(0, event, first) == "again"
    assert seen.verdict(0, event, other) == "duplicate"
    assert seen.verdict(1, event, other) == "new"  # partitions apart: never the same event
    assert once.event_hash("/survey-tool", "s1") != event  # ids are per source


def test_hashes_stay_what_the_tables_hold() -> None:
    """Workers compare these with the hashes their predecessors wrote: they must not change."""
    assert once.event_hash("/s", "e1") == 8207681690430232033
    headers = [("ce_type", b"t"), ("ce_id", b"x")]
    assert once.record_hash(b'{"a": 1}', headers) == 457358754676576356
    assert once.record_hash(None, []) == 8238016292129134938
    assert once.record_hash(b"", [("h", b"")]) == 7361655246776712668
    assert service.fact_id("/s", "e1", "r", "ann") == 2101033237787394300  # a bucket's ids


def test_entries_seal_into_chunks_are_read_back_and_expire_past_the_horizon() -> None:
    data: dict[str, Any] = {}
    seen = once.SeenEvents(data, horizon_days=8)
    pairs = [n for i in range(once.CHUNK + 3) for n in (i, 10_000 + i)]
    writes = seen.remember(2, "2026-11-20", pairs[: 2 * once.CHUNK])
    assert [k for k, _ in writes] == ["2/2026-11-20#0", "2/2026-11-20"]  # chunk first
    writes = seen.remember(2, "2026-11-20", pairs[2 * once.CHUNK :])
    # As the changelog holds it, and as a worker reads it back.
    changelog = [(k, orjson.loads(service.to_json(v))) for k, v in writes]
    assert changelog == [("2/2026-11-20", {"fresh": pairs[2 * once.CHUNK :], "sealed": 1})]
    assert service.compact(changelog[0][1]) == {"fresh": service.ids(pairs[2 * once.CHUNK :]),
                                                 "sealed": 1}  # fmt: skip
    seen.remember(2, "2026-11-28", [7, 8])

    again = once.SeenEvents(data, horizon_days=8)  # a worker that takes the partition over
    again.rebuild([2])
    assert again.verdict(2, once.CHUNK + 2, 10_000 + once.CHUNK + 2) == "again"
    assert again.verdict(2, 0, 1) == "duplicate"
    assert again.verdict(2, 7, 8) == "again"

    gone = again.expired(date(2026, 11, 29))  # 8 days: the 20th is past, the 28th is not
    assert sorted(gone) == ["2/2026-11-20", "2/2026-11-20#0"]
    assert again.verdict(2, 0, 1) == "new" and again.verdict(2, 7, 8) == "again"


def test_verdicts_hold_once_the_latest_events_go_into_the_arrays() -> None:
    data: dict[str, Any] = {}
    seen = once.SeenEvents(data, horizon_days=8)
    n = 3 * once.MERGE + 5  # three merges, five events still in the dict
    events = [once.event_hash("/s", f"e{i}") for i in range(n)]
    old = [once.event_hash("/s", f"old{i}") for i in range(100)]
    seen.remember(4, "2026-11-20", [x for i, e in enumerate(old) for x in (e, -i)])
    seen.rebuild([4])  # a worker's index starts from the table, then grows
    for i, event in enumerate(events):
        assert seen.verdict(4, event, i) == "new"
        seen.add(4, event, i)
    index = seen._index[4]
    assert len(index.events) == 3 * once.MERGE + 100 and len(index.latest) == 5
    assert list(index.events) == sorted(index.events)
    assert all(seen.verdict(4, event, i) == "again" for i, event in enumerate(events))
    assert all(seen.verdict(4, event, -i) == "again" for i, event in enumerate(old))
    assert all(seen.verdict(4, event, -1) == "duplicate" for event in events[:: once.MERGE // 4])
    assert seen.verdict(4, once.event_hash("/s", "other"), 0) == "new"
    assert seen.verdict(5, events[0], 0) == "new"
