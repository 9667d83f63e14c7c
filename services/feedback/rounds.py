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
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from shared.contract import topics
from shared.contract.codec import CloudEvent, CodecError, decode
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
from shared.infra.settings import Settings
from shared.infra.views import TopicView

log = logging.getLogger(__name__)
MAX_OPEN_ROUNDS = 10  # at once: each holds its answers until it closes
# Longer than a claim's way to its open record: a publish, a read back, a publish.
CLAIM_LEASE = timedelta(seconds=30)


class RoundsView(TopicView):
    topic = topics.ROUNDS

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._rounds: dict[str, SurveyRound] = {}
        self._holding: dict[str, RoundClaim] = {}  # claims that won, round not opened yet
        self._outcomes: dict[str, str | None] = {}  # claim -> why it lost (None: it won)

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if key is None:
            return
        if value is None:  # a settled claim (rounds themselves are never deleted)
            claim = key.decode().rpartition("#")[2]
            self._holding.pop(claim, None)
            self._outcomes.pop(claim, None)
            return
        try:
            ce = decode(headers, value)
            if ce.type == ROUND_CLAIM:
                self._decide(RoundClaim.model_validate(ce.data))
            else:
                self._opened(SurveyRound.model_validate(ce.data))
        except (CodecError, ValidationError) as exc:  # one bad record never stops a view
            log.warning("invalid rounds record %r ignored: %s", key, exc)

    def _opened(self, survey_round: SurveyRound) -> None:
        self._rounds[survey_round.survey_id] = survey_round
        for claim in [c for c in self._holding.values() if c.survey_id == survey_round.survey_id]:
            del self._holding[claim.claim]

    def _decide(self, claim: RoundClaim) -> None:
        """Whether ``claim`` wins, from what came before it in the log (and its own time,
        against which earlier claims' leases are read): the same on every replica."""
        live = [c for c in self._holding.values() if c.until > claim.at]
        self._outcomes[claim.claim] = reason = self.refusal(claim.survey_id, live)
        if reason is None:
            self._holding[claim.claim] = claim

    def refusal(self, survey_id: str, claims: Sequence[RoundClaim] = ()) -> str | None:
        """Why ``survey_id`` cannot be opened now, with ``claims`` holding places too;
        ``None`` if it can."""
        if (found := self._rounds.get(survey_id)) is not None:
            return f"round {survey_id!r} exists already ({found.state})"
        if any(c.survey_id == survey_id for c in claims):
            return f"round {survey_id!r} is being opened already"
        if sum(r.state == "open" for r in self._rounds.values()) + len(claims) >= MAX_OPEN_ROUNDS:
            return f"{MAX_OPEN_ROUNDS} rounds are open: close one first"
        return None

    def outcome(self, claim: str) -> str | None:
        """Why ``claim`` lost; ``None`` if it won. ``KeyError`` if not read yet."""
        return self._outcomes[claim]

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


def _record(key: str, ce_type: str, data: dict[str, object], client: Client, ce_id: str) -> Record:
    ce = CloudEvent(ce_id, f"/rapport/feedback/{client.name}", ce_type, datetime.now(UTC), data)
    return Record.of(topics.ROUNDS, key, ce)


def _round_record(survey_round: SurveyRound, client: Client) -> Record:
    data = survey_round.model_dump(mode="json")
    return _record(survey_round.survey_id, SURVEY_ROUND, data, client,
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
    await publisher.publish([_record(key, ROUND_CLAIM, claim.model_dump(mode="json"), client,
                                     claim.claim)])  # fmt: skip
    try:
        await rounds.sync()  # up to the claim, at least
        reason = rounds.outcome(claim.claim)
        if reason is not None:
            raise InvalidInput("survey_id", reason)
        opened = SurveyRound(survey_id=survey_id, state="open", opened_at=now)
        await publisher.publish([_round_record(opened, client)])
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
