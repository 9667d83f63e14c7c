"""HTTP request and response bodies (contract: ARCHITECTURE §4)."""

from __future__ import annotations

from typing import Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.contract.events import Message, Person, RecognitionFields, check_message

MAX_BATCH = 500


class RecognitionIn(RecognitionFields):
    message: Message
    occurred_at: AwareDatetime | None = None
    event_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _message(self) -> Self:
        check_message(self.message)
        return self


class RecognitionBatchIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    recognitions: tuple[RecognitionIn, ...] = Field(min_length=1, max_length=MAX_BATCH)


class PeopleBatchIn(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    people: tuple[Person, ...] = Field(min_length=1, max_length=5000)


class Accepted(BaseModel):
    event_id: str


class BatchAccepted(BaseModel):
    event_ids: list[str]


class PeopleAccepted(BaseModel):
    accepted: int


class Erased(BaseModel):
    person_id: str
    keys_destroyed: int  # none when they were erased already
    open_rounds: int  # survey rounds still open, their answer to each (if any) withdrawn
