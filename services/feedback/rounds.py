"""Survey rounds: an admin opens one, answers are taken while it is open, an admin closes it.

Closing publishes a ``RoundClosed`` marker to every partition of the survey topic: in
each partition, the answers before the marker are the round's answers, and the
aggregator publishes the round's figures from them, once. The rounds topic (compacted,
key = survey id, one partition) tells every feedback replica which rounds take answers.

Opening is decided by the topic's order, not by what one replica has read: a replica
appends a *claim*, reads the topic back up to it, and opens the round only if its claim
won, that is, if at its place in the log the round did not exist, no earlier live claim
was for it, and fewer than ``MAX_OPEN_ROUNDS`` rounds were open or claimed. Every replica
reads the same log in the same order and decides every claim the same way, so requests
arriving at once at several replicas never open more than the limit, nor one round twice
(the digest's delivery log works the same way). A claim that won holds its place until
the round is opened or ``CLAIM_LEASE`` has passed (its replica died in between); each
claim is removed (a tombstone) once settled.

Each open round has a respondent key, made when it opens and destroyed when it closes
(``shared.readmodels.rounds``, where the topic is read).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta

from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import (
    ROUND_CLAIM,
    ROUND_CLOSED,
    SURVEY_ROUND,
    RoundClaim,
    RoundClosed,
    SurveyRound,
)
from shared.infra.auth import Client
from shared.infra.errors import BrokerUnavailable, InvalidInput, NotFound
from shared.infra.kafka import Publisher, Record
from shared.readmodels.rounds import RoundsView, round_record

# Longer than a claim's way to its open record: a publish, a read back, a publish.
CLAIM_LEASE = timedelta(seconds=30)


def _roundround_record(survey_round: SurveyRound, client: Client) -> Record:
    data = survey_round.model_dump(mode="json")
    return round_record(survey_round.survey_id, SURVEY_ROUND, data, client,
                   f"{survey_round.survey_id}:{survey_round.state}")  # fmt: skip


async def open_round(
    survey_id: str, client: Client, rounds: RoundsView, publisher: Publisher
) -> SurveyRound:
    """Open a new round if the log's order lets this request (see the module); a round id
    is never used twice, and never more than ``MAX_OPEN_ROUNDS`` are open."""
    await rounds.sync()
    if (reason := rounds.refusal(survey_id)) is not None:  # refused without a claim
        raise InvalidInput("survey_id", reason)
    now = datetime.now(UTC)
    claim = RoundClaim(survey_id=survey_id, claim=uuid.uuid4().hex, at=now, until=now + CLAIM_LEASE)
    key = f"{survey_id}#{claim.claim}"  # "#" is in no survey id
    await publisher.publish([round_record(key, ROUND_CLAIM, claim.model_dump(mode="json"), client,
                                     claim.claim)])  # fmt: skip
    try:
        await rounds.sync()  # up to the claim, at least
        reason = rounds.outcome(claim.claim)
        if reason is not None:
            raise InvalidInput("survey_id", reason)
        opened = SurveyRound(survey_id=survey_id, state="open", opened_at=now)
        # The key first: whoever reads the round as open has read its key.
        await publisher.publish([*rounds.keys.made(survey_id, client),
                                 _roundround_record(opened, client)])  # fmt: skip
        return opened
    finally:  # settled, won or lost; if the broker is gone, the lease ends it
        with contextlib.suppress(BrokerUnavailable):
            await publisher.publish([Record(topics.ROUNDS, key.encode(), None, [])])


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
        if rounds.keys.get(survey_id) is not None:  # a close that failed half-way
            await publisher.publish(rounds.keys.destroyed(survey_id))
        return found
    now = datetime.now(UTC)
    data = RoundClosed(survey_id=survey_id).model_dump()
    marker = CloudEvent(f"{survey_id}:closed", f"/rapport/feedback/{client.name}",
                        ROUND_CLOSED, now, data)  # fmt: skip
    markers = [Record.of(topics.SURVEY, None, marker, partition=p)
               for p in await publisher.partitions(topics.SURVEY)]  # fmt: skip
    closed = found.model_copy(update={"state": "closed", "closed_at": now})
    await publisher.publish(markers)  # first: the close is where the markers are
    await publisher.publish([_roundround_record(closed, client), *rounds.keys.destroyed(survey_id)])
    await rounds.sync()  # this replica refuses answers from now on; others within moments
    return closed
