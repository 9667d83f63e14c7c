"""``rapport directory import``: publish a CSV of people straight to the directory topic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import ValidationError

from shared.contract.events import Person
from shared.infra.auth import Client
from shared.infra.errors import InvalidInput
from shared.infra.kafka import Publisher
from shared.infra.settings import SealingSettings
from shared.infra.subjects import SubjectKeys

from .service import publish_people

IMPORTER = Client("directory-import", frozenset({"directory:write"}))
TRUE = {"1", "true", "yes", "y"}


def parse_people(rows: Iterable[Mapping[str, str | None]]) -> list[Person]:
    """Validate every row first, so a bad file publishes nothing."""
    people = []
    for line, row in enumerate(rows, start=2):
        fields = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        try:
            people.append(
                Person(
                    id=fields.get("id", ""),
                    name=fields.get("name", ""),
                    email=fields.get("email", ""),
                    team_id=fields.get("team_id", ""),
                    manager_id=fields.get("manager_id") or None,
                    timezone=fields.get("timezone") or "UTC",
                    active=fields.get("active", "true").lower() in TRUE,
                    slack_id=fields.get("slack_id") or None,
                )
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "row"
            raise InvalidInput(f"line {line}: {field}", first["msg"]) from None
    return people


async def import_people(settings: SealingSettings, rows: Iterable[Mapping[str, str | None]]) -> int:
    people = parse_people(rows)
    publisher, subjects = Publisher(settings), SubjectKeys(settings)
    await publisher.start()
    try:
        await subjects.start()
        for start in range(0, len(people), 1000):
            await publish_people(people[start : start + 1000], IMPORTER, publisher, subjects)
    finally:
        await subjects.stop()
        await publisher.stop()
    return len(people)
