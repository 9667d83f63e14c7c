"""Stage two: survey events to their team's partition.

rapport.feedback.survey.v1 --> rapport.aggregator.team-facts.v1

Each event is checked, here only, and forwarded as a survey record (``records``), keyed
by its team, so that the aggregate stage sees a team's answers beside its recognition
facts; a round's close marker goes to the same partition number, where it closes the
round for every team there.
"""

from __future__ import annotations

from collections.abc import Callable

from faust.types import Message

from shared.contract import topics
from shared.contract.codec import CodecError
from shared.contract.events import RoundClosed
from shared.readmodels.questions import Catalogue

from .output import Output, Sent
from .records import checked_feedback, survey_record

DLQ = topics.dlq(topics.SURVEY)


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
                ce, item = checked_feedback(message, self.questions)
            except (CodecError, ValueError) as exc:  # pydantic's ValidationError included
                sent.append(self.out.to_dlq(message, str(exc), DLQ))
                continue
            if isinstance(item, RoundClosed):  # closes the round on the same partition
                key, partition = None, message.partition
            else:
                key, partition = item.team_id.encode(), self.partition_of(item.team_id)
            headers, value = survey_record(ce, item)
            sent.append(self.out.write(topics.TEAM_FACTS, partition, key, value, headers))
        return sent, len(messages)
