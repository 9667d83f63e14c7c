"""The aggregator's roster reads directory records as the full view does, keeping less."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from services.recognition.service import person_record
from shared.contract.codec import CloudEvent, encode
from shared.contract.events import PERSON, Person
from shared.infra.auth import Client
from shared.infra.settings import Settings
from shared.readmodels.directory import DirectoryView, Placement, Roster, plain


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


def test_a_slack_user_id_finds_the_one_active_person_who_carries_it() -> None:
    view = DirectoryView(Settings())

    def apply(*records: tuple[bytes, list[tuple[str, bytes]], bytes | None]) -> None:
        for key, headers, value in records:
            view.apply(key, headers, value)

    def found(slack_id: str) -> str | None:
        person = asyncio.run(view.find_slack_user(slack_id))
        return person.id if person is not None else None

    apply(
        record("ann", slack_id="U0ANN"),
        record("bob", slack_id="U0BOB"),
        record("bob", slack_id="U0BOB2"),  # changed: the old id no longer finds bob
        record("cid", slack_id="U0CID", active=False),
        record("eve"),  # none: records from before the field have none
    )
    assert (found("U0ANN"), found("U0BOB2")) == ("ann", "bob")  # a miss asks the broker
    apply(record("dan", slack_id="U0ANN"))  # two people with one id: neither is guessed
    assert found("U0ANN") is None
    apply((b"dan", [], None), (b"bob", [], None), record("bob", slack_id="U0BOB3"))
    assert (found("U0ANN"), found("U0BOB3")) == ("ann", "bob")
    assert view.get("eve") is not None and view.get("eve").slack_id is None  # type: ignore[union-attr]


def test_a_slack_user_id_looks_like_one() -> None:
    for bad in ("u0abc", "U0", "C0123ABC", "U0ABC DEF", "<@U0ABC>"):
        with pytest.raises(ValidationError):
            Person(id="a", name="A", email="a@x.io", team_id="t", slack_id=bad)
    assert Person(id="a", name="A", email="a@x.io", team_id="t", slack_id="W012A3CDE").slack_id


def test_the_directory_event_changes_compatibly() -> None:
    """Readers ignore fields added later; writers leave slack_id out when there is none,
    so readers from before it read the record."""
    view = DirectoryView(Settings())
    view.apply(*record("zed", pronouns="they"))  # a field a later version may add
    assert view.get("zed") is not None
    ann = Person(id="ann", name="Ann", email="a@x.io", team_id="t1")
    client = Client("hr", frozenset({"directory:write"}))
    written = orjson.loads(person_record("ann", plain(ann), client).value or b"{}")
    assert "slack_id" not in written and "erased" not in written
    with_id = plain(ann.model_copy(update={"slack_id": "U0ANN"}))
    assert orjson.loads(person_record("ann", with_id, client).value or b"{}")["slack_id"] == "U0ANN"
