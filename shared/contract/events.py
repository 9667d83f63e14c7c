"""Event models (contract: ARCHITECTURE §3). Frozen, unknown fields rejected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.errors import HeaderParseError
from email.headerregistry import Address
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from shared.contract.text import is_blank
from shared.infra.errors import InvalidInput

RECOGNITION_GIVEN = "rapport.recognition.given.v1"
PERSON = "rapport.directory.person.v1"
TEAM_SNAPSHOT = "rapport.metrics.team_snapshot.v1"
SURVEY_RESPONSE = "rapport.feedback.survey_response.v1"
SELF_ASSESSMENT = "rapport.feedback.self_assessment.v1"
SURVEY_ROUND = "rapport.feedback.survey_round.v1"
ROUND_CLOSED = "rapport.feedback.round_closed.v1"
RESPONSE_WITHDRAWN = "rapport.feedback.response_withdrawn.v1"
ROUND_CLAIM = "rapport.feedback.round_claim.v1"
ROUND_KEY = "rapport.feedback.round_key.v1"
SUBJECT_KEY = "rapport.privacy.subject_key.v1"
DIGEST_DELIVERY = "rapport.digest.delivery.v1"
CURRENT_GENERATION = "rapport.aggregator.current_generation.v1"
DIGEST_SUBSCRIPTION = "rapport.digest.subscription.v1"

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")]
MAX_RECIPIENTS = 20
MAX_MESSAGE = 2000
MAX_VALUES = 3
MAX_CLOCK_SKEW = timedelta(minutes=5)
# The longest reach of any figure (9 ISO weeks of trend and a 28-day window: 70 days)
# and a margin: an older event would count nowhere, or be a typo.
MAX_EVENT_AGE = timedelta(days=90)
MAX_COMMENT = 1000
# Sealed answers: 100 items of 64-character ids and a comment of 4-byte characters, base64.
MAX_SEALED = 32_768
Score = Annotated[int, Field(ge=1, le=5)]
Token = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


def event_key(source: str, event_id: str) -> str:
    """The record key of a recognition: its identity, so that every record of one event
    lands on one partition (the aggregator counts an event once there)."""
    return f"{source}|{event_id}"


def event_time(value: datetime | None, field: str, now: datetime | None = None) -> datetime:
    """When an event happened: ``value`` if given, else ``now`` (default: this moment).

    Raise :class:`InvalidInput` for a time more than a few minutes ahead, or older
    than ``MAX_EVENT_AGE``.
    """
    now = now or datetime.now(UTC)
    if value is None:
        return now
    try:
        utc = value.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, say: before any UTC date
        raise InvalidInput(field, "out of range") from None
    if utc > now + MAX_CLOCK_SKEW:
        minutes = MAX_CLOCK_SKEW.seconds // 60
        raise InvalidInput(field, f"must not be more than {minutes} minutes in the future")
    if utc < now - MAX_EVENT_AGE:
        raise InvalidInput(field, f"must not be more than {MAX_EVENT_AGE.days} days ago")
    return value


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    # OSError: a name the file system refuses as a path (too long, say).
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown timezone {name[:64]!r}") from None
    return name


def _email(value: str) -> str:
    """One plain address (``name@domain``): never a list, a display name or a header."""
    try:
        Address(addr_spec=value)
    # The standard library's parser fails on some odd input with other errors too
    # (AttributeError: 'InvalidHeaderDefect' object has no attribute 'all_defects').
    except (ValueError, HeaderParseError, AttributeError):
        raise ValueError(f"{value!r} is not one e-mail address") from None
    return value


class Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecognitionFields(Event):
    """The fields and rules of a recognition, shared by the event and the HTTP body."""

    giver_id: Id
    recipient_ids: tuple[Id, ...] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    values: tuple[str, ...] = Field(min_length=1, max_length=MAX_VALUES)
    channel: str = Field(default="api", min_length=1, max_length=32)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.giver_id in self.recipient_ids:
            raise ValueError("recipient_ids: self-recognition is not allowed")
        if len(set(self.recipient_ids)) != len(self.recipient_ids):
            raise ValueError("recipient_ids: duplicate recipient")
        if len(set(self.values)) != len(self.values):
            raise ValueError("values: duplicate value")
        return self


Message = Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE)]


def check_message(message: str | None) -> None:
    if message is not None and is_blank(message):
        raise ValueError("message: must not be blank (nothing in it shows)")


class RecognitionGiven(RecognitionFields):
    """One person thanked one or more others, tagged with 1 to 3 company values.

    The message is ``sealed_message`` when the recognition service published it: sealed
    with the giver's and every recipient's data keys (``shared.infra.sealing``), so that
    erasing any of them makes it unreadable. A producer writing to the topic itself may
    send ``message`` as plain text instead (then no erasure reaches it).
    """

    message: Message | None = None
    sealed_message: str | None = Field(default=None, min_length=1, max_length=16_384)
    occurred_at: AwareDatetime

    @model_validator(mode="after")
    def _one_message(self) -> Self:
        if (self.message is None) == (self.sealed_message is None):
            raise ValueError("message: give either message or sealed_message, one of them")
        check_message(self.message)
        return self


SLACK_USER_ID = r"^[UW][A-Z0-9]{2,20}$"  # as Slack writes them: U024BE7LH, W012A3CDE


Name = Annotated[str, Field(min_length=1, max_length=200)]
Email = Annotated[
    str,
    AfterValidator(_email),
    Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$"),
]


class PersonFields(Event):
    """Where a person sits: the fields of a directory entry that are not personal data
    beyond their ids."""

    id: Id
    team_id: Id
    manager_id: Id | None = None
    timezone: Annotated[str, AfterValidator(_timezone)] = Field(
        default="UTC", min_length=1, max_length=64
    )
    active: bool = True
    # Their Slack user id (optional; added compatibly: older records have none). Mentions
    # in Slack resolve to a person through it.
    slack_id: str | None = Field(default=None, pattern=SLACK_USER_ID)


class Contact(Event):
    """How a person is named and reached: sealed with their data key in the directory
    (``DirectoryEntry.sealed_contact``), so that erasing them erases it."""

    name: Name
    email: Email


class Person(PersonFields):
    """A person as the directory API, the CSV import and SCIM give them."""

    name: Name
    email: Email

    @property
    def contact(self) -> Contact:
        return Contact(name=self.name, email=self.email)


class DirectoryEntry(PersonFields):
    """A directory record (the topic is compacted by person id).

    The recognition service writes a person's name and e-mail address sealed with their
    data key (``sealed_contact``, a ``Contact`` as JSON). Records written before that (or
    by a producer of your own) hold them in plain text, which no erasure reaches. An
    erased person's entry holds neither: they stay where they sit, counted, unnamed.
    """

    name: Name | None = None
    email: Email | None = None
    sealed_contact: str | None = Field(default=None, min_length=1, max_length=4096)
    erased: bool = False

    @model_validator(mode="after")
    def _one_contact(self) -> Self:
        plain = self.name is not None or self.email is not None
        if plain and (self.name is None or self.email is None):
            raise ValueError("name and email: give both, or sealed_contact")
        if plain and self.sealed_contact is not None:
            raise ValueError("name and email: not beside sealed_contact")
        if self.erased and (plain or self.sealed_contact is not None):
            raise ValueError("erased: an erased person has no contact")
        return self


def _comment(comment: str | None) -> str | None:
    return None if comment is None or is_blank(comment) else comment.strip()


class Answers(Event):
    """What one person answered: a score per item, an eNPS, a comment. Sealed whole in a
    survey response (``SurveyResponded.sealed_answers``)."""

    answers: dict[Id, Score] = Field(min_length=1, max_length=100)
    enps: int | None = Field(default=None, ge=0, le=10)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)

    @field_validator("comment")
    @classmethod
    def _blank_is_none(cls, comment: str | None) -> str | None:
        return _comment(comment)


class SurveyAnswers(Answers):
    """One person's answers to one survey (the HTTP body's)."""

    survey_id: Id


class SurveyResponded(Event):
    """A survey response; ``respondent`` is the person's token for this round (``RoundKey``),
    never their id.

    The answers are ``sealed_answers`` when the feedback service published it: the
    ``Answers`` as JSON, sealed with the response's own key (``shared.infra.subjects.
    ResponseKeys``), destroyed if the respondent is erased while the round is open. A
    producer writing to the topic itself may give ``answers``, ``enps`` and ``comment``
    in plain text instead (then no erasure reaches them).
    """

    survey_id: Id
    respondent: Token
    team_id: Id
    answers: dict[Id, Score] | None = Field(default=None, min_length=1, max_length=100)
    enps: int | None = Field(default=None, ge=0, le=10)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT)
    sealed_answers: str | None = Field(default=None, min_length=1, max_length=MAX_SEALED)

    @field_validator("comment")
    @classmethod
    def _blank_is_none(cls, comment: str | None) -> str | None:
        return _comment(comment)

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        if self.sealed_answers is None and self.answers is None:
            raise ValueError("answers: give either answers or sealed_answers")
        if self.sealed_answers is not None and (self.answers, self.enps, self.comment) != (
            None, None, None):  # fmt: skip
            raise ValueError("sealed_answers: answers, enps and comment go inside it, not beside")
        return self


class ResponseWithdrawn(Event):
    """A respondent erased while a round is open: their answer to it, if any, is withdrawn
    (never counted, deleted from the aggregator's table). On the survey topic, keyed by
    their team, after whatever they answered."""

    survey_id: Id
    respondent: Token
    team_id: Id


class SelfAssessed(Event):
    """What a leader predicts their team will answer, per dimension."""

    survey_id: Id
    leader_id: Id
    team_id: Id
    predicted: dict[Id, Score] = Field(min_length=1, max_length=100)


class SurveyRound(Event):
    """A survey round (compacted rounds topic, key = survey id): open, then closed."""

    survey_id: Id
    state: Literal["open", "closed"]
    opened_at: datetime
    closed_at: datetime | None = None


class RoundClaim(Event):
    """A replica's claim to open a round (rounds topic, key ``survey_id#claim``): the log's
    order decides between replicas, and a claim that won holds its place until ``until``
    or until the round is opened."""

    survey_id: Id
    claim: str = Field(pattern=r"^[0-9a-f]{32}$")
    at: datetime
    until: datetime


class RoundKey(Event):
    """An open round's respondent key (rounds topic, key ``survey_id#key``): 32 random
    bytes, hex. A respondent's token is a keyed hash of their id under it, so the key is
    the round's whole person-to-token map; its tombstone at close destroys the map."""

    survey_id: Id
    key: str = Field(pattern=r"^[0-9a-f]{64}$")


class SubjectKey(Event):
    """A person's data key, wrapped by the master key (subject keys topic, key = the
    random subject id): whatever is sealed about them opens with it until it is erased."""

    person_id: Id
    wrapped: str = Field(pattern=r"^[0-9a-f]{1,512}$")


class CurrentGeneration(Event):
    """Which generation of the aggregator's topics every reader reads (generations topic,
    key "current"), written by ``rapport replay`` once the next one has caught up."""

    generation: int = Field(ge=1)


class RoundClosed(Event):
    """The close of a round, on every partition of the survey topic: answers before it
    in a partition count, answers after it do not."""

    survey_id: Id


class DayActivity(Event):
    """One team's recognition activity on one UTC day (event time)."""

    received: dict[str, int] = {}  # recipient id -> recognitions received
    given: dict[str, int] = {}  # giver id (member of this team) -> recognitions given
    values: dict[str, int] = {}  # value -> recipient-recognitions tagged with it
    cross_team: int = 0  # received from a giver in another team
    upward: int = 0  # received by the giver's manager
    downward: int = 0  # received from the recipient's own manager
    # Who recognized whom, for the connection figures: giver id (member of this team) ->
    # recipient id -> recognitions; and when, for bursts: giver id -> UTC hour "00".."23"
    # -> recognitions given. Only the giver's team holds a link, so a recognition is one
    # link wherever its recipients are.
    links: dict[str, dict[str, int]] = {}
    hours: dict[str, dict[str, int]] = {}

    @property
    def received_count(self) -> int:
        return sum(self.received.values())

    @property
    def given_count(self) -> int:
        return sum(self.given.values())


class DimensionSums(Event):
    total: int  # sum of the answers (1-5)
    favorable: int  # answers of 4 or 5
    n: int  # answers


class TrustBlock(Event):
    """A closed survey round's answers in one team: k or more respondents, published once
    the round closed and never changed after.

    Every trust figure is computed from whole rounds, so any two figures (two windows,
    or one window before and after a round closes) differ by whole rounds: by k or more
    respondents, never fewer (the differencing guard, ARCHITECTURE §7).
    """

    at: datetime  # the round's latest answer: it counts in windows containing this
    respondents: int
    dimensions: dict[str, DimensionSums]


class EnpsBlock(Event):
    at: datetime
    n: int
    promoters: int  # 9-10
    detractors: int  # 0-6


class CommentBlock(Event):
    at: datetime
    comments: tuple[str, ...]  # without author, in an order unrelated to submission


class SurveyTurnout(Event):
    respondents: int  # distinct respondents of a closed round (k or more)
    last_at: datetime


class Prediction(Event):
    at: datetime
    predicted: dict[str, int]  # dimension -> the leader's predicted score (1-5)


class TeamTrust(Event):
    """A team's closed survey rounds, as sums; raw answers never leave the aggregator."""

    blocks: tuple[TrustBlock, ...] = ()
    enps: tuple[EnpsBlock, ...] = ()
    comments: tuple[CommentBlock, ...] = ()
    surveys: dict[str, SurveyTurnout] = {}
    predictions: tuple[Prediction, ...] = ()


class TeamSnapshot(Event):
    """Everything the exporter and the digest need for one team (keyed by team id)."""

    team_id: Id
    generated_at: datetime
    days: dict[str, DayActivity] = {}  # ISO date -> activity, recent days only
    totals: dict[str, int] = {}  # value -> recipient-recognitions, all time
    trust: TeamTrust = TeamTrust()


class DigestDelivery(Event):
    """One step of sending a manager's digest for a week: claimed, then sent or failed."""

    manager_id: Id
    week: str = Field(pattern=r"^\d{4}-W\d{2}$")
    state: Literal["claimed", "sent", "failed"]
    owner: str  # the digest replica that wrote it
    until: datetime | None = None  # a claim's lease
    message_id: str | None = None
    reason: str | None = None
    # Who a sent digest named (its manager, and the reports it listed): whose erasure
    # removes its copy from the local outbox.
    named: tuple[Id, ...] = ()


class DigestSubscription(Event):
    """Whether a manager receives the weekly digest: they stop it from a link in the mail
    (one click, RFC 8058) and start it again from the page that link opens."""

    manager_id: Id
    subscribed: bool
