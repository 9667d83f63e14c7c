"""Stage two: survey events to their team's partition.

rapport.feedback.survey.v1 --> rapport.aggregator.team-facts.v1

Each event is checked and forwarded as it is, keyed by its team, so that the aggregate
stage sees a team's answers beside its recognition facts; a round's close marker goes
to the same partition number, where it closes the round for every team there.
"""

from __future__ import annotations

from collections.abc import Callable

from faust.types import Message

from shared.contract import topics
from shared.contract.codec import CloudEvent, CodecError, decode
from shared.contract.events import (
    ROUND_CLOSED,
    SELF_ASSESSMENT,
    SURVEY_RESPONSE,
    RoundClosed,
    SelfAssessed,
    SurveyResponded,
)
from shared.readmodels.questions import Catalogue

from .output import Output, Sent, headers_of

Feedback = SurveyResponded | SelfAssessed | RoundClosed
DLQ = topics.dlq(topics.SURVEY)


def feedback_of(message: Message, questions: Catalogue) -> tuple[CloudEvent, Feedback]:
    """Decode and check one survey-topic event; raise if it cannot be counted."""
    ce = decode(headers_of(message), message.value)
    if ce.type == SURVEY_RESPONSE:
        response = SurveyResponded.model_validate(ce.data)
        questions.check_answers(response.answers)
        return ce, response
    if ce.type == SELF_ASSESSMENT:
        assessment = SelfAssessed.model_validate(ce.data)
        questions.check_predicted(assessment.predicted)
        return ce, assessment
    if ce.type == ROUND_CLOSED:
        return ce, RoundClosed.model_validate(ce.data)
    raise CodecError(f"unexpected ce_type {ce.type!r}")


class Forward:
    def __init__(
        self, out: Output, questions: Catalogue, partition_of: Callable[[str], int]
    ) -> None:
        self.out = out
        self.questions = questions
        self.partition_of = partition_of  # of a team

    async def batch(self, messages: list[Message]) -> tuple[list[Sent], int]:
        sent = []
        for message in messages:
            try:
                item = feedback_of(message, self.questions)[1]
            except (CodecError, ValueError) as exc:  # pydantic's ValidationError included
                sent.append(await self.out.to_dlq(message, str(exc), DLQ))
                continue
            headers = headers_of(message)
            if isinstance(item, RoundClosed):  # closes the round on the same partition
                key, partition = None, message.partition
            else:
                key, partition = item.team_id.encode(), self.partition_of(item.team_id)
            sent.append(
                self.out.batches.add(
                    topics.TEAM_FACTS, partition, key, message.value, headers
                ).acked
            )
        return sent, len(messages)
