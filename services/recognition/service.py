"""Recognition and directory logic: validate against the directory, then publish."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends

from shared.contract import topics
from shared.contract.codec import CloudEvent, format_time
from shared.contract.events import (
    PERSON,
    RECOGNITION_GIVEN,
    RESPONSE_WITHDRAWN,
    DirectoryEntry,
    Person,
    PersonFields,
    RecognitionGiven,
    ResponseWithdrawn,
    event_key,
    event_time,
)
from shared.infra.auth import Client
from shared.infra.deps import Parts, get_parts
from shared.infra.errors import InvalidInput, NotFound
from shared.infra.kafka import Publisher, Record
from shared.infra.sealing import seal
from shared.infra.subjects import ResponseKeys, SubjectKeys
from shared.readmodels.directory import contact_context
from shared.readmodels.rounds import RoundsView, token

from .models import RecognitionIn
from .settings import RecognitionSettings

PartsDep = Annotated[Parts[RecognitionSettings], Depends(get_parts)]


def source_for(client: Client) -> str:
    """The CloudEvents source of events posted by ``client``: ids are unique per source."""
    return f"/rapport/recognition/{client.name}"


def check(
    r: RecognitionIn, where: str, values: Sequence[str], now: datetime
) -> tuple[datetime, dict[str, Any]]:
    """Return the time and data of ``r``'s event, or raise :class:`InvalidInput` naming
    the field: what needs no directory. Without a time of its own, it happened ``now``."""
    occurred_at = event_time(r.occurred_at, f"{where}occurred_at", now)
    unknown_values = [v for v in r.values if v not in values]
    if unknown_values:
        raise InvalidInput(
            f"{where}values", f"unknown value(s) {unknown_values}; allowed: {list(values)}"
        )
    # Every field was validated as part of ``r``: as RecognitionGiven dumps it, without
    # building one.
    data = r.model_dump(mode="json", include=_FIELDS)
    if r.occurred_at is None:
        data["occurred_at"] = format_time(occurred_at)
    return occurred_at, data


def check_people(r: RecognitionIn, where: str, inactive: set[str]) -> None:
    """Raise :class:`InvalidInput` if the giver or a recipient is in ``inactive``."""
    if r.giver_id in inactive:
        raise InvalidInput(f"{where}giver_id", f"unknown or inactive person {r.giver_id!r}")
    missing = [i for i in r.recipient_ids if i in inactive]
    if missing:
        raise InvalidInput(f"{where}recipient_ids", f"unknown or inactive person(s) {missing}")


_FIELDS = set(RecognitionGiven.model_fields)


def recognition_record(
    event: tuple[datetime, dict[str, Any]], event_id: str, client: Client
) -> Record:
    time, data = event
    ce = CloudEvent(event_id, source_for(client), RECOGNITION_GIVEN, time, data)
    # Keyed by the event: its records meet on one partition, where it counts once.
    return Record.of(topics.RECOGNITION, event_key(ce.source, ce.id), ce)


def event_ids(requests: Sequence[RecognitionIn], idempotency_key: str | None) -> list[str]:
    """Client ids win; else derive from the Idempotency-Key; else new UUIDs."""
    ids = []
    for i, r in enumerate(requests):
        if r.event_id is not None:
            ids.append(r.event_id)
        elif idempotency_key is not None:
            ids.append(idempotency_key if len(requests) == 1 else f"{idempotency_key}:{i}")
        else:
            ids.append(str(uuid.uuid4()))
    if len(set(ids)) != len(ids):
        raise InvalidInput("recognitions", "duplicate event_id in one batch")
    return ids


async def accept_recognitions(
    requests: Sequence[RecognitionIn],
    *,
    batch: bool,
    idempotency_key: str | None,
    client: Client,
    parts: Parts[RecognitionSettings],
) -> list[str]:
    """Validate all (all-or-nothing), publish all, return the event ids once acknowledged."""
    ids = event_ids(requests, idempotency_key)
    where = [f"recognitions.{i}." if batch else "" for i in range(len(requests))]
    now, values = datetime.now(UTC), parts.settings.values  # one moment for a whole batch
    events = [check(r, at, values, now) for r, at in zip(requests, where, strict=True)]
    # Then the directory, which may have to catch up (a broker round trip).
    people = {p for r in requests for p in (r.giver_id, *r.recipient_ids)}
    inactive = await parts.directory.inactive(people)
    for r, at in zip(requests, where, strict=True):
        check_people(r, at, inactive)
    subjects = await parts.subjects.ensure(people, parts.publisher)
    keys: dict[str, tuple[str, bytes]] = {}  # person -> subject and data key, once each
    for person, subject in subjects.items():
        key = parts.subjects.key(subject)
        assert key is not None  # ensure() has just found or made it
        keys[person] = (subject, key)
    source = source_for(client)
    for r, (_, data), event_id in zip(requests, events, ids, strict=True):
        about = dict(keys[p] for p in (r.giver_id, *r.recipient_ids))
        data["sealed_message"] = seal(data.pop("message"), about,
                                      message_context(source, event_id))  # fmt: skip
    await parts.publisher.publish(
        [recognition_record(e, i, client) for e, i in zip(events, ids, strict=True)]
    )
    return ids


def message_context(source: str, event_id: str) -> str:
    """What a recognition's sealed message is bound to: its event (moved to another, it
    does not open)."""
    return f"{RECOGNITION_GIVEN} {source} {event_id}"


def person_record(person_id: str, entry: DirectoryEntry | None, client: Client) -> Record:
    """A directory record; ``None`` is a tombstone (the person is removed)."""
    if entry is None:
        return Record(topics.DIRECTORY, person_id.encode(), None, [])
    ce = CloudEvent(
        id=str(uuid.uuid4()),
        source=f"/rapport/directory/{client.name}",
        type=PERSON,
        time=datetime.now(UTC),
        # Without the fields added later when unset: readers from before them read it.
        data=entry.model_dump(mode="json", exclude={
            f for f in ("slack_id", "name", "email", "sealed_contact", "erased")
            if not getattr(entry, f)
        }),
    )  # fmt: skip
    return Record.of(topics.DIRECTORY, person_id, ce)


async def publish_people(
    people: Sequence[Person], client: Client, publisher: Publisher, subjects: SubjectKeys
) -> None:
    """Publish ``people``, each one's contact sealed with their data key."""
    ids = [p.id for p in people]
    if len(set(ids)) != len(ids):
        raise InvalidInput("people", "duplicate person id in one batch")
    found = await subjects.ensure(ids, publisher)
    records = []
    for person in people:
        key = subjects.key(found[person.id])
        assert key is not None  # ensure() has just found or made it
        sealed = seal(person.contact.model_dump_json(), {found[person.id]: key},
                      contact_context(person.id))  # fmt: skip
        fields = person.model_dump(exclude={"name", "email"})
        entry = DirectoryEntry(**fields, sealed_contact=sealed)
        records.append(person_record(person.id, entry, client))
    await publisher.publish(records)


async def erase(
    person_id: str,
    client: Client,
    parts: Parts[RecognitionSettings],
    rounds: RoundsView,
    responses: ResponseKeys,
) -> tuple[int, int]:
    """Erase a person: destroy their data keys (whatever is sealed about them, wherever
    it is, can never be opened again) and the keys of their answers to the rounds still
    open (their token finds them while the round's key lives), withdraw those answers,
    and replace their directory entry with one that names them no more. Return how many
    data keys were destroyed, and how many rounds were open (whether they answered is
    not said). They stay where they sit, so every figure stays as it was. ``NotFound``
    for someone never known here."""
    person = parts.directory.get(person_id)
    if person is None:
        await parts.directory.sync()
        person = parts.directory.get(person_id)
    destroyed = await parts.subjects.erase(person_id, publisher=parts.publisher)
    if person is None:
        if not destroyed:
            raise NotFound(f"unknown person {person_id!r}")
        return destroyed, 0
    withdrawn = await withdrawals(person, rounds)
    await responses.erase(*(w.respondent for w in withdrawn), publisher=parts.publisher)
    records = [withdrawal_record(w, client) for w in withdrawn]
    if not person.erased:
        where = person.model_dump(include=set(PersonFields.model_fields) - {"slack_id"})
        records.append(person_record(person_id, DirectoryEntry(**where, erased=True), client))
    await parts.publisher.publish(records)
    return destroyed, len(withdrawn)


async def withdrawals(person: DirectoryEntry, rounds: RoundsView) -> list[ResponseWithdrawn]:
    """A withdrawal of ``person``'s answer to every round still open, under their token."""
    await rounds.sync()
    found = []
    for survey_round in rounds.all():
        key = rounds.keys.get(survey_round.survey_id)
        if survey_round.state != "open" or key is None:
            continue
        found.append(ResponseWithdrawn(survey_id=survey_round.survey_id,
                                       respondent=token(key, person.id),
                                       team_id=person.team_id))  # fmt: skip
    return found


def withdrawal_record(withdrawal: ResponseWithdrawn, client: Client) -> Record:
    """On the respondent's team's partition of the survey topic: after what they answered."""
    ce = CloudEvent(str(uuid.uuid4()), source_for(client), RESPONSE_WITHDRAWN,
                    datetime.now(UTC), withdrawal.model_dump())  # fmt: skip
    return Record.of(topics.SURVEY, withdrawal.team_id, ce)
