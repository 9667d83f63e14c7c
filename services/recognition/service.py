"""Recognition and directory logic: validate against the directory, then publish."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from shared import topics
from shared.auth import Client
from shared.codec import CloudEvent
from shared.directory import DirectoryView
from shared.errors import InvalidInput
from shared.events import (
    PERSON,
    RECOGNITION_GIVEN,
    Person,
    RecognitionFields,
    RecognitionGiven,
    event_key,
    event_time,
)
from shared.kafka import Publisher, Record

from .models import RecognitionIn


def source_for(client: Client) -> str:
    """The CloudEvents source of events posted by ``client``: ids are unique per source."""
    return f"/rapport/recognition/{client.name}"


async def _unknown(ids: Sequence[str], directory: DirectoryView) -> list[str]:
    return [i for i in ids if await directory.find_active(i) is None]


async def check(
    r: RecognitionIn, where: str, values: Sequence[str], directory: DirectoryView
) -> RecognitionGiven:
    """Return the event for ``r``, or raise :class:`InvalidInput` naming the field."""
    occurred_at = event_time(r.occurred_at, f"{where}occurred_at")
    unknown_values = [v for v in r.values if v not in values]
    if unknown_values:
        raise InvalidInput(
            f"{where}values", f"unknown value(s) {unknown_values}; allowed: {list(values)}"
        )
    if await _unknown([r.giver_id], directory):
        raise InvalidInput(f"{where}giver_id", f"unknown or inactive person {r.giver_id!r}")
    missing = await _unknown(r.recipient_ids, directory)
    if missing:
        raise InvalidInput(f"{where}recipient_ids", f"unknown or inactive person(s) {missing}")
    # Every field was validated as part of ``r``: no need to validate them again.
    fields = {name: getattr(r, name) for name in RecognitionFields.model_fields}
    return RecognitionGiven.model_construct(**fields, occurred_at=occurred_at)


def recognition_record(event: RecognitionGiven, event_id: str, client: Client) -> Record:
    ce = CloudEvent(
        id=event_id,
        source=source_for(client),
        type=RECOGNITION_GIVEN,
        time=event.occurred_at,
        data=event.model_dump(mode="json"),
    )
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
    values: Sequence[str],
    directory: DirectoryView,
    publisher: Publisher,
) -> list[str]:
    """Validate all (all-or-nothing), publish all, return the event ids once acknowledged."""
    ids = event_ids(requests, idempotency_key)
    events = [
        await check(r, f"recognitions.{i}." if batch else "", values, directory)
        for i, r in enumerate(requests)
    ]
    await publisher.publish(
        [recognition_record(e, i, client) for e, i in zip(events, ids, strict=True)]
    )
    return ids


def person_record(person_id: str, person: Person | None, client: Client) -> Record:
    """A directory record; ``None`` is a tombstone (the person is removed)."""
    if person is None:
        return Record(topics.DIRECTORY, person_id.encode(), None, [])
    ce = CloudEvent(
        id=str(uuid.uuid4()),
        source=f"/rapport/directory/{client.name}",
        type=PERSON,
        time=datetime.now(UTC),
        # Without slack_id when there is none: readers from before the field read it.
        data=person.model_dump(
            mode="json", exclude={"slack_id"} if person.slack_id is None else None
        ),
    )
    return Record.of(topics.DIRECTORY, person_id, ce)


async def publish_people(people: Sequence[Person], client: Client, publisher: Publisher) -> None:
    ids = [p.id for p in people]
    if len(set(ids)) != len(ids):
        raise InvalidInput("people", "duplicate person id in one batch")
    await publisher.publish([person_record(p.id, p, client) for p in people])
