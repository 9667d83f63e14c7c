"""Routes of the feedback service (contract: ARCHITECTURE §4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI

from shared.auth import Client, require
from shared.deps import (
    DirectoryDep,
    IdempotencyKey,
    PublisherDep,
    SettingsDep,
    create_writer_app,
)
from shared.questions import catalogue
from shared.settings import Settings
from shared.web import WRITE_ERRORS

from . import service
from .models import Accepted, QuestionsOut, SelfAssessmentIn, SurveyResponseIn

WriterDep = Annotated[Client, Depends(require("feedback:write"))]
SCALE = {"1": "strongly disagree", "2": "disagree", "3": "neutral", "4": "agree",
         "5": "strongly agree"}  # fmt: skip

router = APIRouter(prefix="/v1")


@router.get("/questions", response_model=QuestionsOut)
async def get_questions(settings: SettingsDep) -> QuestionsOut:
    """The survey catalogue: one 1-5 item per dimension unless configured, plus eNPS."""
    questions = catalogue(settings)
    return QuestionsOut(
        items=questions.items, dimensions=questions.dimensions, scale=SCALE, enps=questions.enps
    )


@router.post("/survey-responses", status_code=202, response_model=Accepted, responses=WRITE_ERRORS)
async def post_survey_response(
    body: SurveyResponseIn,
    client: WriterDep,
    settings: SettingsDep,
    directory: DirectoryDep,
    publisher: PublisherDep,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Accept one person's answers; a later answer to the same survey replaces it."""
    event_id = await service.accept_response(
        body,
        idempotency_key=idempotency_key,
        client=client,
        settings=settings,
        questions=catalogue(settings),
        directory=directory,
        publisher=publisher,
    )
    return Accepted(event_id=event_id)


@router.post("/self-assessments", status_code=202, response_model=Accepted, responses=WRITE_ERRORS)
async def post_self_assessment(
    body: SelfAssessmentIn,
    client: WriterDep,
    settings: SettingsDep,
    directory: DirectoryDep,
    publisher: PublisherDep,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Accept a leader's prediction of how their team will answer."""
    event_id = await service.accept_self_assessment(
        body,
        idempotency_key=idempotency_key,
        client=client,
        questions=catalogue(settings),
        directory=directory,
        publisher=publisher,
    )
    return Accepted(event_id=event_id)


def create(settings: Settings | None = None) -> FastAPI:
    """Build the feedback service app; refuse an unsafe pseudonym key in production."""
    settings = settings or Settings()
    # Pseudonyms are only as safe as their key.
    settings.check_secrets("api_keys", "pseudonym_key")
    catalogue(settings)  # a broken questions file stops the service now, not per request
    return create_writer_app("Rapport feedback service", settings, router)
