"""Routes of the recognition service (contract: ARCHITECTURE §4)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request

from shared.contract.events import Person
from shared.infra.auth import Client, Require
from shared.infra.deps import IdempotencyKey, create_writer_app
from shared.infra.errors import InvalidInput, NotFound
from shared.infra.fastpath import DirectRoute
from shared.infra.subjects import ResponseKeys
from shared.infra.web import WRITE_ERRORS, errors
from shared.readmodels.rounds import RoundsView

from . import service, slack
from .models import (
    Accepted,
    BatchAccepted,
    Erased,
    PeopleAccepted,
    PeopleBatchIn,
    RecognitionBatchIn,
    RecognitionIn,
)
from .service import PartsDep
from .settings import RecognitionSettings

WriterDep = Annotated[Client, Depends(Require("recognition:write"))]
DirectoryWriterDep = Annotated[Client, Depends(Require("directory:write"))]
PrivacyAdminDep = Annotated[Client, Depends(Require("privacy:admin"))]

# The single POST on the fast path (shared/infra/fastpath.py): 2,570 against 2,036 requests a
# second on FastAPI's own route class (`make bench`, Tansu). The batch gained 1%: not on it.
writes = APIRouter(prefix="/v1", responses=WRITE_ERRORS, route_class=DirectRoute)
router = APIRouter(prefix="/v1", responses=WRITE_ERRORS)


@writes.post("/recognitions", status_code=202, response_model=Accepted)
async def post_recognition(
    body: RecognitionIn,
    client: WriterDep,
    parts: PartsDep,
    idempotency_key: IdempotencyKey = None,
) -> Accepted:
    """Accept one recognition; 202 once the broker has acknowledged it."""
    ids = await service.accept_recognitions(
        [body],
        batch=False,
        idempotency_key=idempotency_key,
        client=client,
        parts=parts,
    )
    return Accepted(event_id=ids[0])


@router.post("/recognitions/batch", status_code=202, response_model=BatchAccepted)
async def post_recognition_batch(
    body: RecognitionBatchIn,
    client: WriterDep,
    parts: PartsDep,
    idempotency_key: IdempotencyKey = None,
) -> BatchAccepted:
    """Accept up to 500 recognitions, all or nothing."""
    ids = await service.accept_recognitions(
        body.recognitions,
        batch=True,
        idempotency_key=idempotency_key,
        client=client,
        parts=parts,
    )
    return BatchAccepted(event_ids=ids)


@router.post("/people/batch", status_code=202, response_model=PeopleAccepted)
async def post_people(
    body: PeopleBatchIn, client: DirectoryWriterDep, parts: PartsDep
) -> PeopleAccepted:
    """Create or replace many people in the directory."""
    await service.publish_people(body.people, client, parts.publisher, parts.subjects)
    return PeopleAccepted(accepted=len(body.people))


@router.put("/people/{person_id}", status_code=202, response_model=PeopleAccepted)
async def put_person(
    person_id: str, body: Person, client: DirectoryWriterDep, parts: PartsDep
) -> PeopleAccepted:
    """Create or replace one person; the id in the path and the body must agree."""
    if body.id != person_id:
        raise InvalidInput("id", f"must equal the id in the path ({person_id!r})")
    await service.publish_people([body], client, parts.publisher, parts.subjects)
    return PeopleAccepted(accepted=1)


@router.delete(
    "/people/{person_id}", status_code=202, response_model=PeopleAccepted, responses=errors(404)
)
async def delete_person(
    person_id: str, client: DirectoryWriterDep, parts: PartsDep
) -> PeopleAccepted:
    """Remove a person from the directory (a tombstone on the compacted topic)."""
    if parts.directory.get(person_id) is None:
        await parts.directory.sync()
        if parts.directory.get(person_id) is None:
            raise NotFound(f"unknown person {person_id!r}")
    await parts.publisher.publish([service.person_record(person_id, None, client)])
    return PeopleAccepted(accepted=1)


@router.post(
    "/people/{person_id}/erasure", status_code=202, response_model=Erased, responses=errors(404)
)
async def erase_person(
    person_id: str, client: PrivacyAdminDep, parts: PartsDep, request: Request
) -> Erased:
    """Erase a person (GDPR Art. 17): their data keys are destroyed, so whatever was
    sealed about them (their name and e-mail address, every recognition's message they
    gave or received) can never be read again, their answers to survey rounds still open
    are withdrawn and made unreadable, and their directory entry names them no more.
    Every other figure stays as it was: their recognitions still count for the teams.
    Answered once the broker has acknowledged; the same call again changes nothing."""
    state = request.app.state
    destroyed, rounds = await service.erase(person_id, client, parts, state.rounds,
                                            state.responses)  # fmt: skip
    return Erased(person_id=person_id, keys_destroyed=destroyed, open_rounds=rounds)


def create(settings: RecognitionSettings | None = None) -> FastAPI:
    """Build the recognition service app: its API, and the Slack app's routes."""
    settings = settings or RecognitionSettings()
    settings.check_secrets()  # a Slack app names its workspace and app id
    app = create_writer_app(
        "Rapport recognition service", settings, [router, slack.router],
        views={"rounds": RoundsView, "responses": ResponseKeys}, fast=writes,
    )  # fmt: skip
    app.state.slack_replays = slack.Replays()
    return app
