"""Survey responses and self-assessments: validate, replace the respondent, seal, publish.

The respondent's id never leaves this service: it is replaced by their token for the
round (``rounds.token``, under the round's respondent key) before anything is published
(ARCHITECTURE §7). Within a round the same person always gets the same token, so the
aggregator can count distinct respondents and let a resubmission replace the earlier
answer; once the round closes its key is destroyed, and nobody can tell whose answers
were whose. The answers themselves are sealed with a key of the respondent's own for the
round (``ResponseKeys``), which their erasure destroys while the round is open.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import (
    SELF_ASSESSMENT,
    SURVEY_RESPONSE,
    Answers,
    DirectoryEntry,
    Event,
    SelfAssessed,
    SurveyResponded,
    event_time,
)
from shared.infra.auth import Client
from shared.infra.errors import InvalidInput
from shared.infra.kafka import Publisher, Record
from shared.infra.subjects import ResponseKeys
from shared.readmodels.directory import DirectoryView
from shared.readmodels.questions import Catalogue
from shared.readmodels.rounds import RoundsView, token

from .models import SelfAssessmentIn, SurveyResponseIn


async def _person(directory: DirectoryView, person_id: str, field: str) -> DirectoryEntry:
    person = await directory.find_active(person_id)
    if person is None:
        raise InvalidInput(field, f"unknown or inactive person {person_id!r}")
    return person


def _record(
    kind: str, event: Event, team_id: str, event_id: str, client: Client, time: datetime
) -> Record:
    ce = CloudEvent(
        id=event_id,
        source=f"/rapport/feedback/{client.name}",
        type=kind,
        time=time,
        data=event.model_dump(mode="json"),
    )
    # Keyed by team: all of one team's feedback stays in order on one partition.
    return Record.of(topics.SURVEY, team_id, ce)


async def accept_response(
    body: SurveyResponseIn,
    *,
    idempotency_key: str | None,
    client: Client,
    questions: Catalogue,
    directory: DirectoryView,
    rounds: RoundsView,
    responses: ResponseKeys,
    publisher: Publisher,
) -> str:
    """Publish one survey response under the respondent's token for the round, its answers
    sealed; return its event id once acked."""
    try:
        questions.check_answers(body.answers)
    except ValueError as exc:
        raise InvalidInput("answers", str(exc).removeprefix("answers: ")) from None
    time = event_time(body.submitted_at, "submitted_at")
    key = await rounds.require_open(body.survey_id)
    person = await _person(directory, body.respondent_id, "respondent_id")
    respondent = token(key, person.id)
    answers = Answers(answers=body.answers, enps=body.enps, comment=body.comment)
    sealed = await responses.seal(answers, body.survey_id, respondent, publisher)
    event = SurveyResponded(survey_id=body.survey_id, respondent=respondent,
                            team_id=person.team_id, sealed_answers=sealed)  # fmt: skip
    event_id = idempotency_key or str(uuid.uuid4())
    await publisher.publish(
        [_record(SURVEY_RESPONSE, event, person.team_id, event_id, client, time)]
    )
    return event_id


async def accept_self_assessment(
    body: SelfAssessmentIn,
    *,
    idempotency_key: str | None,
    client: Client,
    questions: Catalogue,
    directory: DirectoryView,
    rounds: RoundsView,
    publisher: Publisher,
) -> str:
    """Publish a leader's prediction for the team they lead; return its event id once acked."""
    try:
        questions.check_predicted(body.predicted)
    except ValueError as exc:
        raise InvalidInput("predicted", str(exc).removeprefix("predicted: ")) from None
    time = event_time(body.submitted_at, "submitted_at")
    await rounds.require_open(body.survey_id)
    leader = await _person(directory, body.leader_id, "leader_id")
    try:
        team_id = directory.led_team(leader)
    except ValueError as exc:
        raise InvalidInput("leader_id", str(exc)) from None
    event = SelfAssessed(
        survey_id=body.survey_id, leader_id=leader.id, team_id=team_id, predicted=body.predicted
    )
    event_id = idempotency_key or str(uuid.uuid4())
    await publisher.publish([_record(SELF_ASSESSMENT, event, team_id, event_id, client, time)])
    return event_id
