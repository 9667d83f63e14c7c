"""Event models enforce the contract's rules."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.contract.events import Person, RecognitionGiven

BASE = {
    "giver_id": "p1",
    "recipient_ids": ["p2"],
    "message": "thanks!",
    "values": ["growth"],
    "occurred_at": datetime(2026, 11, 20, tzinfo=UTC),
}


def test_valid_recognition_is_frozen() -> None:
    r = RecognitionGiven(**BASE)
    with pytest.raises(ValidationError):
        r.giver_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"recipient_ids": ["p1"]}, "self-recognition"),
        ({"recipient_ids": []}, "at least 1"),
        ({"recipient_ids": [f"p{i}" for i in range(2, 23)]}, "at most 20"),
        ({"recipient_ids": ["p2", "p2"]}, "duplicate recipient"),
        ({"message": ""}, "at least 1"),
        ({"message": "   "}, "blank"),
        ({"message": "x" * 2001}, "at most 2000"),
        ({"values": []}, "at least 1"),
        ({"values": ["a", "b", "c", "d"]}, "at most 3"),
        ({"occurred_at": datetime(2026, 11, 20)}, "timezone"),
        ({"unexpected": 1}, "Extra inputs"),
    ],
)
def test_invalid_recognitions_are_rejected(change: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        RecognitionGiven(**{**BASE, **change})


def test_person_rejects_unknown_timezone() -> None:
    with pytest.raises(ValidationError, match="unknown timezone"):
        Person(id="p1", name="A", email="a@x.io", team_id="t", timezone="Mars/Base")


# The last one made the standard library's parser fail with AttributeError (fuzzing).
@pytest.mark.parametrize("email", ["a,b@x.io", "x@y>", "a(b@x.io", "\U0001f60d\U000dcaefs\u00cf@["])
def test_person_email_is_one_plain_address(email: str) -> None:
    with pytest.raises(ValidationError, match="is not one e-mail address"):
        Person(id="p1", name="A", email=email, team_id="t")
    assert Person(id="p1", name="A", email='"a,b"@x.io', team_id="t").email == '"a,b"@x.io'
