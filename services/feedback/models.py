"""HTTP request and response bodies (contract: ARCHITECTURE §4)."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract.events import Id, Score, SurveyAnswers
from shared.readmodels.questions import Item


class SurveyResponseIn(SurveyAnswers):
    respondent_id: Id
    # For survey tools importing earlier rounds; default: when the service receives it.
    submitted_at: AwareDatetime | None = None


class SelfAssessmentIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    survey_id: Id
    leader_id: Id
    predicted: dict[Id, Score] = Field(min_length=1, max_length=100)
    submitted_at: AwareDatetime | None = None


class QuestionsOut(BaseModel):
    items: tuple[Item, ...]
    dimensions: tuple[str, ...]
    scale: dict[str, str]
    enps: str


class Accepted(BaseModel):
    event_id: str


class RoundIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    survey_id: Id
