"""Event models (contract: ARCHITECTURE §3). Frozen, unknown fields rejected."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

RECOGNITION_GIVEN = "rapport.recognition.given.v1"
PERSON = "rapport.directory.person.v1"
TEAM_SNAPSHOT = "rapport.metrics.team_snapshot.v1"

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")]
MAX_RECIPIENTS = 20
MAX_MESSAGE = 2000


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {name!r}") from None
    return name


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecognitionFields(Event):
    """The fields and rules of a recognition, shared by the event and the HTTP body."""

    giver_id: Id
    recipient_ids: tuple[Id, ...] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    message: str = Field(min_length=1, max_length=MAX_MESSAGE)
    values: tuple[str, ...] = Field(min_length=1, max_length=3)
    channel: str = Field(default="api", min_length=1, max_length=32)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.message.strip():
            raise ValueError("message: must not be blank")
        if self.giver_id in self.recipient_ids:
            raise ValueError("recipient_ids: self-recognition is not allowed")
        if len(set(self.recipient_ids)) != len(self.recipient_ids):
            raise ValueError("recipient_ids: duplicate recipient")
        if len(set(self.values)) != len(self.values):
            raise ValueError("values: duplicate value")
        return self


class RecognitionGiven(RecognitionFields):
    """One person thanked one or more others, tagged with 1 to 3 company values."""

    occurred_at: AwareDatetime


class Person(Event):
    """A directory entry; the directory topic is compacted by person id."""

    id: Id
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    team_id: Id
    manager_id: Id | None = None
    timezone: Annotated[str, AfterValidator(_timezone)] = "UTC"
    active: bool = True


class DayActivity(Event):
    """One team's recognition activity on one UTC day (event time)."""

    received: dict[str, int] = {}  # recipient id -> recognitions received
    given: dict[str, int] = {}  # giver id (member of this team) -> recognitions given
    values: dict[str, int] = {}  # value -> recipient-recognitions tagged with it
    cross_team: int = 0  # received from a giver in another team
    upward: int = 0  # received by the giver's manager
    downward: int = 0  # received from the recipient's own manager

    @property
    def received_count(self) -> int:
        return sum(self.received.values())

    @property
    def given_count(self) -> int:
        return sum(self.given.values())


class TeamSnapshot(Event):
    """Everything the exporter and the digest need for one team (keyed by team id)."""

    team_id: Id
    generated_at: datetime
    days: dict[str, DayActivity]  # ISO date -> activity, recent days only
    totals: dict[str, int]  # value -> recipient-recognitions, all time
