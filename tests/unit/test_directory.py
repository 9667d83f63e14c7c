"""The aggregator's roster reads directory records as the full view does, keeping less."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from shared.codec import CloudEvent, encode
from shared.directory import DirectoryView, Placement, Roster
from shared.events import PERSON
from shared.settings import Settings


def record(person_id: str, **fields: object) -> tuple[bytes, list[tuple[str, bytes]], bytes]:
    data = {"id": person_id, "name": "A", "email": "a@x.io", "team_id": "t1", **fields}
    headers, value = encode(CloudEvent("e", "/test", PERSON, datetime.now(UTC), data))
    return person_id.encode(), headers, value


def test_roster_keeps_team_and_manager_and_follows_changes() -> None:
    roster, view = Roster(Settings()), DirectoryView(Settings())
    records = [
        record("ann"),
        record("bob", manager_id="ann"),
        record("bob", manager_id="ann", team_id="t2"),  # moved
        record("cid", active=False),  # inactive people are still placed: old kudos count
        (b"dan", *record("dan")[1:2], b"{not json"),  # unreadable: ignored, like the view does
        (b"ann", [], None),  # removed
    ]
    for key, headers, value in records:
        roster.apply(key, headers, value)
        view.apply(key, headers, value)
    assert roster.get("bob") == Placement("bob", "t2", "ann")
    assert roster.get("cid") == Placement("cid", "t1", None)
    assert roster.get("ann") is None and view.get("ann") is None
    assert roster.get("dan") is None and view.get("dan") is None
    for person_id in ("bob", "cid"):
        person, placement = view.get(person_id), roster.get(person_id)
        assert person is not None and placement is not None
        assert (placement.team_id, placement.manager_id) == (person.team_id, person.manager_id)
    # One string per team and person, shared with every bucket that names them.
    bob = roster.get("bob")
    assert bob is not None and bob.team_id is sys.intern("t2") and bob.id is sys.intern("bob")
