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

Each open round has a respondent key (``RoundKeys``): 32 random bytes, written before the
round's open record, so a replica that knows the round is open knows its key. A
respondent's token is a keyed hash of their id under it: the same person gets the same
token within the round (a resubmission replaces their answer) and an unrelated one in the
next. The key is destroyed when the round closes (a tombstone on Apache Kafka, compacted
away within ``forget_within_s``; a deleted file beside the embedded broker, which never
compacts): from then on nobody, the key's holders included, can tell whose answers were
whose.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from shared.contract import topics
from shared.contract.codec import CloudEvent, CodecError, decode
from shared.contract.events import (
    ROUND_CLAIM,
    ROUND_CLOSED,
    ROUND_KEY,
    SURVEY_ROUND,
    RoundClaim,
    RoundClosed,
    RoundKey,
    SurveyRound,
)
from shared.infra.auth import Client
from shared.infra.errors import BrokerUnavailable, InvalidInput, NotFound
from shared.infra.kafka import Publisher, Record
from shared.infra.settings import Settings
from shared.infra.views import TopicView, read_event

log = logging.getLogger(__name__)
MAX_OPEN_ROUNDS = 10  # at once: each holds its answers until it closes
# Longer than a claim's way to its open record: a publish, a read back, a publish.
CLAIM_LEASE = timedelta(seconds=30)


KEY_SUFFIX = "#key"  # "#" is in no survey id; a claim's suffix is 32 hex digits


def token(key: bytes, person_id: str) -> str:
    """A person's token in the round whose respondent key is ``key`` (128 bits, hex)."""
    return hmac.new(key, person_id.encode(), hashlib.sha256).hexdigest()[:32]


class RoundKeys:
    """Each open round's respondent key: in the rounds topic on Apache Kafka, as files in
    ``var/round-keys/`` beside the embedded broker (whose memory storage never compacts,
    so a tombstone there would not destroy anything)."""

    def __init__(self, settings: Settings) -> None:
        self._dir = settings.var_dir / "round-keys" if settings.embedded else None
        self._read: dict[str, bytes] = {}  # from the topic

    def _file(self, survey_id: str) -> Path:
        assert self._dir is not None
        return self._dir / f"{survey_id.encode().hex()}.key"

    def get(self, survey_id: str) -> bytes | None:
        if self._dir is None:
            return self._read.get(survey_id)
        try:
            return self._file(survey_id).read_bytes()
        except FileNotFoundError:
            return None

    def apply(self, survey_id: str, value: RoundKey | None) -> None:
        if value is None:
            self._read.pop(survey_id, None)
        else:
            self._read[survey_id] = bytes.fromhex(value.key)

    def made(self, survey_id: str, client: Client) -> list[Record]:
        """A new key for ``survey_id``: the records that keep it (none: a file)."""
        key = secrets.token_bytes(32)
        if self._dir is None:
            data = RoundKey(survey_id=survey_id, key=key.hex()).model_dump()
            return [_record(survey_id + KEY_SUFFIX, ROUND_KEY, data, client, uuid.uuid4().hex)]
        self._dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._file(survey_id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return []

    def destroyed(self, survey_id: str) -> list[Record]:
        """Destroy ``survey_id``'s key: the records that do it (none: a file)."""
        if self._dir is None:
            return [Record(topics.ROUNDS, (survey_id + KEY_SUFFIX).encode(), None, [])]
        self._file(survey_id).unlink(missing_ok=True)
        return []


class RoundsView(TopicView):
    topic = topics.ROUNDS

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._rounds: dict[str, SurveyRound] = {}
        self._holding: dict[str, RoundClaim] = {}  # claims that won, round not opened yet
        self._outcomes: dict[str, str | None] = {}  # claim -> why it lost (None: it won)
        self.keys = RoundKeys(settings)

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if key is None:
            return
        text = key.decode()
        if text.endswith(KEY_SUFFIX):
            survey_id = text.removesuffix(KEY_SUFFIX)
            if value is None:
                self.keys.apply(survey_id, None)
            elif (found := read_event(RoundKey, key, headers, value)) is not None:
                self.keys.apply(survey_id, found)
            return
        if value is None:  # a settled claim, or a tick (rounds are never deleted)
            claim = text.rpartition("#")[2]
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

    async def require_open(self, survey_id: str) -> bytes:
        """The round's respondent key; ``InvalidInput`` unless the round is open (catching
        up once on a miss)."""
        found = self.get(survey_id)
        if found is None or found.state != "open":
            await self.sync()
            found = self.get(survey_id)
        if found is None:
            raise InvalidInput("survey_id", f"no round {survey_id!r}: an admin opens rounds")
        if found.state != "open":
            raise InvalidInput("survey_id", f"round {survey_id!r} is closed")
        key = self.keys.get(survey_id)
        if key is None:  # opened by a version before respondent keys
            raise InvalidInput("survey_id", f"round {survey_id!r} has no respondent key: "
                               "close it and open a new one")  # fmt: skip
        return key


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
        # The key first: whoever reads the round as open has read its key.
        await publisher.publish([*rounds.keys.made(survey_id, client),
                                 _round_record(opened, client)])  # fmt: skip
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
    await publisher.publish([_round_record(closed, client), *rounds.keys.destroyed(survey_id)])
    await rounds.sync()  # this replica refuses answers from now on; others within moments
    return closed
