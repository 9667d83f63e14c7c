"""The rounds topic as every service reads it: which survey rounds are open, and each open
round's respondent key (ARCHITECTURE §7).

Each open round has a respondent key (``RoundKeys``): 32 random bytes, written before the
round's open record, so a replica that knows the round is open knows its key. A
respondent's token is a keyed hash of their id under it: the same person gets the same
token within the round (a resubmission replaces their answer) and an unrelated one in the
next. The key is destroyed when the round closes (a tombstone on Apache Kafka, compacted
away within ``forget_within_s``; a deleted file beside the embedded broker, which never
compacts): from then on nobody, the key's holders included, can tell whose answers were
whose. While it is open, the token finds one person's answer: to withdraw it when they
are erased (``services.recognition.service.erase``).

Opening is decided by the topic's order (``services.feedback.rounds``): every replica
reads the same log in the same order and decides every claim the same way here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from shared.contract import topics
from shared.contract.codec import CloudEvent, CodecError, decode
from shared.contract.events import ROUND_CLAIM, ROUND_KEY, RoundClaim, RoundKey, SurveyRound
from shared.infra.auth import Client
from shared.infra.errors import InvalidInput
from shared.infra.kafka import Record
from shared.infra.settings import Settings
from shared.infra.views import TopicView, read_event

log = logging.getLogger(__name__)
MAX_OPEN_ROUNDS = 10  # at once: each holds its answers until it closes
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
            return [round_record(survey_id + KEY_SUFFIX, ROUND_KEY, data, client, uuid.uuid4().hex)]
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


def round_record(
    key: str, ce_type: str, data: dict[str, object], client: Client, ce_id: str
) -> Record:
    """A record of the rounds topic, written by ``client``."""
    ce = CloudEvent(ce_id, f"/rapport/feedback/{client.name}", ce_type, datetime.now(UTC), data)
    return Record.of(topics.ROUNDS, key, ce)
