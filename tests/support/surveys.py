"""The aggregator's survey stage on a plain dict, and survey answers to feed it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.aggregator.surveys import Opener, Surveys
from shared.contract.codec import CloudEvent
from shared.contract.events import (
    ROUND_CLOSED,
    SURVEY_RESPONSE,
    RoundClosed,
    SurveyResponded,
    TeamTrust,
)
from shared.figures import trust as tr
from shared.readmodels.questions import Catalogue, Item

K = 5
QUESTIONS = Catalogue(items=(Item(id="direction", dimension="direction", text="d"),
                             Item(id="growth", dimension="growth", text="g")))  # fmt: skip
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # a Monday: ISO week 2026-W47
WEEK = tr.iso_week("2026-W47")


def who(i: int) -> str:
    return f"{i:032x}"


def response(
    i: int, direction: int, growth: int, enps: int | None = None, *, survey: str = "s1",
    comment: str | None = None, team: str = "t",
) -> SurveyResponded:  # fmt: skip
    return SurveyResponded(survey_id=survey, respondent=who(i), team_id=team,
                           answers={"direction": direction, "growth": growth},
                           enps=enps, comment=comment)  # fmt: skip


class NoKeys:
    """For tables fed plain answers only: a sealed one fails the test."""

    def open(self, sealed: str, survey_id: str, respondent: str) -> None:
        raise AssertionError("a sealed answer reached a table without response keys")


class Table:
    """The survey stage on a plain dict, as the aggregator runs it on its table."""

    def __init__(self, ck: int = K, responses: Opener | None = None) -> None:
        self.data: dict[str, Any] = {}
        self.surveys = Surveys(self.data, QUESTIONS, K, ck, responses or NoKeys())
        self.n = 0

    def apply(self, item: Any, partition: int = 0, at: datetime | None = None) -> set[str]:
        self.n += 1
        kind = ROUND_CLOSED if isinstance(item, RoundClosed) else SURVEY_RESPONSE
        ce = CloudEvent(f"e{self.n}", "/test", kind, at or T0 + timedelta(minutes=self.n), {})
        updates, moved = self.surveys.changes(ce, item, partition, lambda team: 0)
        self.surveys.commit(updates)
        return moved

    def feed(self, responses: list[SurveyResponded]) -> None:
        for r in responses:
            self.apply(r)

    def close(self, survey: str = "s1", partition: int = 0) -> set[str]:
        return self.apply(RoundClosed(survey_id=survey), partition)

    def published(self, team: str = "t") -> TeamTrust:
        return self.surveys.team_trust(team)
