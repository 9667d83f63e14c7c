"""The survey records of the team-facts topic: checked once, by the forward stage, then
written with their data as validated and a tag the aggregate stage reads them by."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from services.aggregator import records
from shared.contract.codec import CloudEvent, encode
from shared.contract.events import SURVEY_RESPONSE, SurveyResponded
from shared.infra.settings import DEFAULT_DIMENSIONS
from shared.readmodels.questions import DEFAULT

WHEN = datetime(2026, 12, 1, 9, tzinfo=UTC)


def message(headers: list[tuple[str, bytes]], value: bytes) -> Any:
    """What the records module reads of a faust message."""
    return SimpleNamespace(headers=headers, value=value)


def answer(**data: Any) -> Any:
    body = {"survey_id": "s1", "respondent": "a" * 32, "team_id": "core",
            "answers": dict.fromkeys(DEFAULT_DIMENSIONS, 4), **data}  # fmt: skip
    return message(*encode(CloudEvent("e1", "/feedback", SURVEY_RESPONSE, WHEN, body)))


def test_a_survey_event_is_forwarded_tagged_with_its_data_as_checked() -> None:
    ce, item = records.checked_feedback(answer(comment="   "), DEFAULT)
    assert isinstance(item, SurveyResponded) and item.comment is None  # blank: none
    headers, value = records.survey_record(ce, item)
    forwarded = message(headers, value)
    assert records.is_survey(forwarded)
    again_ce, again = records.forwarded_feedback(forwarded)
    assert (again_ce.id, again_ce.type, again_ce.time) == (ce.id, ce.type, ce.time)
    assert again == item


def test_the_original_survey_record_is_not_taken_for_a_forwarded_one() -> None:
    """A survey event as the feedback service writes it carries the CloudEvent headers
    but no tag: on team-facts it would be read as (unreadable) facts, never counted."""
    assert not records.is_survey(answer())


def test_what_the_forward_stage_refuses_never_reaches_team_facts() -> None:
    with pytest.raises(ValueError, match="missing item"):
        records.checked_feedback(answer(answers={"growth": 4}), DEFAULT)
