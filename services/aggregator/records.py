"""What is on the team-facts topic, the one the aggregate stage reads: two kinds of record.

- A survey event, checked once by the forward stage and written again as the CloudEvent
  it was with its data as validated (a blank comment gone, say), tagged ``SURVEY`` in a
  header: the aggregate stage reads it without checking it again.
- Anything else is a recognition's team facts for one team (``service.dumps``), from
  fan-out, untagged (no header on the busiest records); what is not goes to the
  dead-letter topic as unreadable facts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from faust.types import Message

from shared.contract.codec import CloudEvent, CodecError, Headers, decode, encode
from shared.contract.events import (
    RESPONSE_WITHDRAWN,
    ROUND_CLOSED,
    SELF_ASSESSMENT,
    SURVEY_RESPONSE,
    ResponseWithdrawn,
    RoundClosed,
    SelfAssessed,
    SurveyResponded,
)
from shared.readmodels.questions import Catalogue

SURVEY = ("rapport_kind", b"survey")
CLOSE = ("ce_type", ROUND_CLOSED.encode())
Feedback = SurveyResponded | SelfAssessed | RoundClosed | ResponseWithdrawn
MODELS: dict[str, type[Feedback]] = {
    SURVEY_RESPONSE: SurveyResponded,
    SELF_ASSESSMENT: SelfAssessed,
    ROUND_CLOSED: RoundClosed,
    RESPONSE_WITHDRAWN: ResponseWithdrawn,
}


def headers_of(message: Message) -> Sequence[tuple[str, bytes]]:
    """A record's headers, as aiokafka reads them (faust types them more loosely)."""
    return cast(Sequence[tuple[str, bytes]], message.headers or ())


def is_survey(message: Message) -> bool:
    return SURVEY in headers_of(message)


def is_close(message: Message) -> bool:
    """Whether a team-facts record is a round's close marker."""
    return CLOSE in headers_of(message)


def checked_feedback(message: Message, questions: Catalogue) -> tuple[CloudEvent, Feedback]:
    """Decode and check one event of the survey topic; raise if it cannot be counted."""
    ce = decode(headers_of(message), message.value)
    model = MODELS.get(ce.type)
    if model is None:
        raise CodecError(f"unexpected ce_type {ce.type!r}")
    item = model.model_validate(ce.data)
    if isinstance(item, SurveyResponded) and item.answers is not None:
        questions.check_answers(item.answers)  # sealed ones are checked once opened
    elif isinstance(item, SelfAssessed):
        questions.check_predicted(item.predicted)
    return ce, item


def survey_record(ce: CloudEvent, item: Feedback) -> tuple[Headers, bytes]:
    """A checked survey event as a team-facts record: its data as validated, tagged."""
    data = item.model_dump(mode="json")
    headers, value = encode(CloudEvent(ce.id, ce.source, ce.type, ce.time, data))
    return [*headers, SURVEY], value


def forwarded_feedback(message: Message) -> tuple[CloudEvent, Feedback]:
    """A survey record of team-facts, as the forward stage checked it: not checked again."""
    ce = decode(headers_of(message), message.value)
    return ce, MODELS[ce.type].model_construct(**ce.data)
