"""Survey rounds: an admin opens one, answers are taken while it is open, an admin closes it.

Closing publishes a ``RoundClosed`` marker to every partition of the survey topic: in
each partition, the answers before the marker are the round's answers, and the
aggregator publishes the round's figures from them, once. The rounds topic (compacted,
key = survey id) tells every feedback replica which rounds take answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from shared import topics
from shared.auth import Client
from shared.codec import CloudEvent
from shared.errors import InvalidInput, NotFound
from shared.events import ROUND_CLOSED, SURVEY_ROUND, RoundClosed, SurveyRound
from shared.kafka import Publisher, Record
from shared.settings import Settings
from shared.views import TopicView, read_event

MAX_OPEN_ROUNDS = 10  # at once: each holds its answers until it closes


class RoundsView(TopicView):
    topic = topics.ROUNDS

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._rounds: dict[str, SurveyRound] = {}

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if (survey_round := read_event(SurveyRound, key, headers, value)) is not None:
            self._rounds[survey_round.survey_id] = survey_round

    def get(self, survey_id: str) -> SurveyRound | None:
        return self._rounds.get(survey_id)

    def all(self) -> list[SurveyRound]:
        return sorted(self._rounds.values(), key=lambda r: (r.opened_at, r.survey_id))

    async def require_open(self, survey_id: str) -> None:
        """Raise ``InvalidInput`` unless the round is open (catching up once on a miss)."""
        found = self.get(survey_id)
        if found is None or found.state != "open":
            await self.sync()
            found = self.get(survey_id)
        if found is None:
            raise InvalidInput("survey_id", f"no round {survey_id!r}: an admin opens rounds")
        if found.state != "open":
            raise InvalidInput("survey_id", f"round {survey_id!r} is closed")


def _round_record(survey_round: SurveyRound, client: Client) -> Record:
    ce = CloudEvent(f"{survey_round.survey_id}:{survey_round.state}",
                    f"/rapport/feedback/{client.name}", SURVEY_ROUND,
                    datetime.now(UTC), survey_round.model_dump(mode="json"))  # fmt: skip
    return Record.of(topics.ROUNDS, survey_round.survey_id, ce)


async def open_round(
    survey_id: str, client: Client, rounds: RoundsView, publisher: Publisher
) -> SurveyRound:
    """Open a new round; a round id is never used twice."""
    await rounds.sync()
    if (found := rounds.get(survey_id)) is not None:
        raise InvalidInput("survey_id", f"round {survey_id!r} exists already ({found.state})")
    if sum(r.state == "open" for r in rounds.all()) >= MAX_OPEN_ROUNDS:
        raise InvalidInput("survey_id", f"{MAX_OPEN_ROUNDS} rounds are open: close one first")
    opened = SurveyRound(survey_id=survey_id, state="open", opened_at=datetime.now(UTC))
    await publisher.publish([_round_record(opened, client)])
    return opened


async def close_round(
    survey_id: str, client: Client, rounds: RoundsView, publisher: Publisher
) -> SurveyRound:
    """Close a round: its figures are published from the answers in the log before the
    close, and never change. Closing a closed round changes nothing."""
    await rounds.sync()
    found = rounds.get(survey_id)
    if found is None:
        raise NotFound(f"no round {survey_id!r}")
    if found.state == "closed":
        return found
    now = datetime.now(UTC)
    data = RoundClosed(survey_id=survey_id).model_dump()
    marker = CloudEvent(f"{survey_id}:closed", f"/rapport/feedback/{client.name}",
                        ROUND_CLOSED, now, data)  # fmt: skip
    markers = [Record.of(topics.SURVEY, None, marker, partition=p)
               for p in await publisher.partitions(topics.SURVEY)]  # fmt: skip
    closed = found.model_copy(update={"state": "closed", "closed_at": now})
    await publisher.publish(markers)  # first: the close is where the markers are
    await publisher.publish([_round_record(closed, client)])
    await rounds.sync()  # this replica refuses answers from now on; others within moments
    return closed
