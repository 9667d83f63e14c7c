"""Routes of the feedback service (contract: ARCHITECTURE §4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Path, Request

from shared.contract.events import SurveyRound
from shared.infra.auth import Client, Require
from shared.infra.deps import IdempotencyKey, Parts, create_writer_app, get_parts
from shared.infra.subjects import ResponseKeys
from shared.infra.web import WRITE_ERRORS, errors
from shared.readmodels.questions import catalogue
from shared.readmodels.rounds import RoundsView

from . import rounds as rounds_
from . import service
from .models import Accepted, QuestionsOut, RoundIn, SelfAssessmentIn, SurveyResponseIn
from .settings import FeedbackSettings

WriterDep = Annotated[Client, Depends(Require("feedback:write"))]
AdminDep = Annotated[Client, Depends(Require("feedback:admin"))]
PartsDep = Annotated[Parts[FeedbackSettings], Depends(get_parts)]
SurveyId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")]


async def get_rounds(request: Request) -> RoundsView:
    rounds: RoundsView = request.app.state.rounds
    return rounds


async def get_responses(request: Request) -> ResponseKeys:
    responses: ResponseKeys = request.app.state.responses
    return responses


RoundsDep = Annotated[RoundsView, Depends(get_rounds)]
ResponsesDep = Annotated[ResponseKeys, Depends(get_responses)]
SCALE = {"1": "strongly disagree", "2": "disagree", "3": "neutral", "4": "agree",
         "5": "strongly agree"}  # fmt: skip

router = APIRouter(prefix="/v1")


@router.get("/questions", response_model=QuestionsOut)
async def get_questions(parts: PartsDep) -> QuestionsOut:
    """The survey catalogue: one 1-5 item per dimension unless configured, plus eNPS."""
    questions = catalogue(parts.settings)
    return QuestionsOut(
        items=questions.items, dimensions=questions.dimensions, scale=SCALE, enps=questions.enps
    )


@router.get("/survey-rounds", response_model=list[SurveyRound])
async def list_rounds(rounds: RoundsDep) -> list[SurveyRound]:
    """Every survey round, open or closed, oldest first."""
    await rounds.sync()
    return rounds.all()


@router.post("/survey-rounds", status_code=202, response_model=SurveyRound, responses=WRITE_ERRORS)
async def open_round(
    body: RoundIn, client: AdminDep, rounds: RoundsDep, parts: PartsDep
) -> SurveyRound:
    """Open a survey round (feedback:admin): answers are taken until it closes."""
    return await rounds_.open_round(body.survey_id, client, rounds, parts.publisher)


@router.post(
    "/survey-rounds/{survey_id}/close",
    status_code=202,
    response_model=SurveyRound,
    responses={**WRITE_ERRORS, **errors(404)},
)
async def close_round(
    survey_id: SurveyId, client: AdminDep, rounds: RoundsDep, parts: PartsDep
) -> SurveyRound:
    """Close a round (feedback:admin): its figures are published from the answers given
    until now, and never change."""
    return await rounds_.close_round(survey_id, client, rounds, parts.publisher)


@router.post("/survey-responses", status_code=202, response_model=Accepted, responses=WRITE_ERRORS)
async def post_survey_response(
    body: SurveyResponseIn,
    client: WriterDep,
    parts: PartsDep,
    rounds: RoundsDep,
    responses: ResponsesDep,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Accept one person's answers to an open round; a later answer replaces it."""
    event_id = await service.accept_response(
        body,
        idempotency_key=idempotency_key,
        client=client,
        questions=catalogue(parts.settings),
        directory=parts.directory,
        rounds=rounds,
        responses=responses,
        publisher=parts.publisher,
    )
    return Accepted(event_id=event_id)


@router.post("/self-assessments", status_code=202, response_model=Accepted, responses=WRITE_ERRORS)
async def post_self_assessment(
    body: SelfAssessmentIn,
    client: WriterDep,
    parts: PartsDep,
    rounds: RoundsDep,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Accept a leader's prediction of how their team will answer an open round."""
    event_id = await service.accept_self_assessment(
        body,
        idempotency_key=idempotency_key,
        client=client,
        questions=catalogue(parts.settings),
        directory=parts.directory,
        rounds=rounds,
        publisher=parts.publisher,
    )
    return Accepted(event_id=event_id)


def create(settings: FeedbackSettings | None = None) -> FastAPI:
    """Build the feedback service app; refuse unsafe settings in production."""
    settings = settings or FeedbackSettings()
    settings.check_secrets()
    catalogue(settings)  # a broken questions file stops the service now, not per request
    return create_writer_app(
        "Rapport feedback service",
        settings,
        [router],
        {"rounds": RoundsView, "responses": ResponseKeys},
    )
