"""Kudos from Slack: the ``/kudos`` slash command and, if switched on, reactions.

Every request is verified with the app's signing secret by slack_sdk's verifier (HMAC-SHA256
over ``v0:{timestamp}:{body}``, timestamps more than five minutes away refused, compared in
constant time); a request answered already within those five minutes (a replay) is refused
too.
A kudos from Slack takes the HTTP API's way: the directory is checked, the event is
published and acknowledged by the broker before the answer, channel ``slack``. Slack
waits 3 seconds for an answer: the directory and the broker get ``ANSWER_WITHIN_S`` of them.

Event ids, so that nothing counts twice:
- a command: its workspace, person, channel, text and UTC day. The same ``/kudos`` again
  that day counts once, so "try again" after a broker failure never counts twice.
- a reaction: its workspace, channel, message and person. Slack's retried deliveries, and
  the same reaction taken off and put back, count once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

import httpx
import orjson
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from shared.contract.events import MAX_MESSAGE, MAX_RECIPIENTS, MAX_VALUES, DirectoryEntry
from shared.contract.text import is_blank
from shared.infra.auth import ApiKeys, Client
from shared.infra.deps import Parts
from shared.infra.errors import BrokerUnavailable, InvalidInput, Unavailable
from shared.readmodels.directory import DirectoryView

from . import service
from .models import RecognitionIn
from .service import PartsDep
from .settings import RecognitionSettings

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
SLACK = Client("slack", frozenset({"recognition:write"}))
ANSWER_WITHIN_S = 2.5
REPLAY_WINDOW_S = 5 * 60  # as the verifier's: older requests are refused anyway
# Inside an escape, no "<": Slack writes a typed one as "&lt;". So a match tried at each
# "<" stops at the next one, and reading a text is linear in its length, however many
# "<" are left open (with "[^>]*", 12,000 of them took seconds).
MENTION = re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|[^<>]*)?>")
VALUE = re.compile(r"(?<![\w&#])#([A-Za-z][\w-]*)")
# Slack's other escapes: <#C123|name> channels, <!here> and <!subteam^S1|@team> specials,
# <https://x|label> links. Shown as their label (a channel as its name, without '#').
ESCAPED = re.compile(r"<([#!]?)([^<>|]*)(?:\|([^<>]*))?>")


def unescape(text: str) -> str:
    """Slack's text: ``&amp;``, ``&lt;`` and ``&gt;`` are its only entities."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def escape(text: str) -> str:
    """Text into a Slack message as text: no mention, link or ping can come of it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Kudos:
    """What a ``/kudos`` says: mentions (Slack user ids), values and the message."""

    mentions: tuple[str, ...]
    values: tuple[str, ...]
    message: str

    @classmethod
    def parse(cls, text: str) -> Kudos:
        mentions = tuple(dict.fromkeys(MENTION.findall(text)))
        rest = ESCAPED.sub(lambda m: m[3] or ("" if m[1] == "!" else m[2]), MENTION.sub(" ", text))
        values = tuple(dict.fromkeys(v.lower() for v in VALUE.findall(rest)))
        message = " ".join(unescape(VALUE.sub(" ", rest)).split())
        return cls(mentions, values, message)


class Refused(Exception):
    """A kudos that cannot count, with what to tell the person in Slack."""


def tags(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"#{v}" for v in values)


def mentions(ids: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"<@{i}>" for i in ids)


def not_in_directory(slack_ids: list[str], you: bool = False) -> Refused:
    who = "you" if you else mentions(slack_ids)
    return Refused(
        f"I can't find {who} in Rapport's people directory. Ask whoever runs Rapport to add "
        f"the Slack id {', '.join(f'`{i}`' for i in slack_ids)} to "
        f"{'your' if you else 'their'} entry (column `slack_id`)."
    )


async def kudos_of(
    kudos: Kudos, giver_slack_id: str, settings: RecognitionSettings, directory: DirectoryView
) -> tuple[DirectoryEntry, list[DirectoryEntry]]:
    """The giver and recipients of a ``/kudos``, or :class:`Refused` saying what is wrong."""
    valid = list(settings.values)
    usage = f"`/kudos @someone {tags(valid[:2])} what they did`"
    if not kudos.mentions:
        raise Refused(f"Mention who you are thanking, for example {usage}.")
    if giver_slack_id in kudos.mentions:
        raise Refused("You can't give kudos to yourself: mention someone else.")
    if len(kudos.mentions) > MAX_RECIPIENTS:
        raise Refused(f"One kudos can name at most {MAX_RECIPIENTS} people.")
    unknown = [v for v in kudos.values if v not in valid]
    if unknown:
        raise Refused(
            f"{tags(unknown)} {'is' if len(unknown) == 1 else 'are'} not among Rapport's "
            f"values. Use one to {MAX_VALUES} of: {tags(valid)}."
        )
    if not kudos.values:
        raise Refused(f"Add one to {MAX_VALUES} values: {tags(valid)}.")
    if len(kudos.values) > MAX_VALUES:
        raise Refused(f"At most {MAX_VALUES} values, from: {tags(valid)}.")
    if is_blank(kudos.message):
        raise Refused(f"Add a few words about what they did, for example {usage}.")
    if len(kudos.message) > MAX_MESSAGE:
        raise Refused(
            f"Your message is {len(kudos.message):,} characters; the most is {MAX_MESSAGE:,}."
        )
    giver = await directory.find_slack_user(giver_slack_id)
    if giver is None:
        raise not_in_directory([giver_slack_id], you=True)
    found = {i: await directory.find_slack_user(i) for i in kudos.mentions}
    missing = [i for i, p in found.items() if p is None]
    if missing:
        raise not_in_directory(missing)
    recipients = [p for p in found.values() if p is not None]
    if giver.id in {p.id for p in recipients}:  # two Slack accounts, one person
        raise Refused("You can't give kudos to yourself: mention someone else.")
    return giver, recipients


def event_id(kind: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]
    return f"slack-{kind}-{digest}"


async def published(recognition: RecognitionIn, parts: Parts[RecognitionSettings]) -> bool:
    """Publish; whether the broker acknowledged it. :class:`Refused` if the checks refuse
    it after all (the directory changed in between, say)."""
    try:
        await service.accept_recognitions(
            [recognition], batch=False, idempotency_key=None, client=SLACK, parts=parts
        )
    except InvalidInput as exc:
        raise Refused(f"Rapport refused this kudos: {exc}") from None
    except BrokerUnavailable:
        log.warning("a kudos from Slack was not acknowledged by the broker")
        return False
    return True


class Replays:
    """Requests answered in the last five minutes, by signature: the same request again
    is a replay. Remembered once answered 200: a delivery that failed may come again."""

    def __init__(self) -> None:
        self._answered: OrderedDict[str, float] = OrderedDict()

    def _forget_old(self) -> None:
        old = time.monotonic() - REPLAY_WINDOW_S
        while self._answered and next(iter(self._answered.values())) < old:
            self._answered.popitem(last=False)

    def seen(self, signature: str) -> bool:
        self._forget_old()
        return signature in self._answered

    def answered(self, signature: str) -> None:
        self._answered[signature] = time.monotonic()


@dataclass(frozen=True)
class Signed:
    """A request signed by Slack: its body, and how to mark it answered."""

    body: bytes
    signature: str
    replays: Replays

    def answered(self) -> None:
        self.replays.answered(self.signature)


async def verified(request: Request) -> Signed:
    """Dependency: the body of a request signed by Slack with our secret, or 401."""
    parts: Parts[RecognitionSettings] = request.app.state.parts
    settings = parts.settings
    if settings.slack_signing_secret is None:
        raise HTTPException(404, "Slack is not set up here (RAPPORT_SLACK_SIGNING_SECRET)")
    body = await request.body()
    verifier = SignatureVerifier(settings.slack_signing_secret.get_secret_value())
    signature = request.headers.get("X-Slack-Signature", "")
    try:
        valid = verifier.is_valid_request(body, dict(request.headers))
    except (ValueError, UnicodeDecodeError):  # a timestamp that is no number, a bad body
        valid = False
    if not valid:  # counted apart from API keys; a signed request is never slowed down
        keys: ApiKeys = request.app.state.api_keys
        keys.slack_failures.refuse(request)
        raise HTTPException(401, "not signed by Slack with this app's signing secret, or stale")
    replays: Replays = request.app.state.slack_replays
    if replays.seen(signature):
        raise HTTPException(401, "this request was answered already (a replay)")
    return Signed(body, signature, replays)


SignedBody = Annotated[Signed, Depends(verified)]
router = APIRouter(prefix="/slack", include_in_schema=False)


def ephemeral(text: str) -> dict[str, str]:
    return {"response_type": "ephemeral", "text": text}


async def post_in_channel(response_url: str, text: str) -> None:
    """The public note of a kudos, through the command's response URL (after the answer)."""
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(response_url, json={"response_type": "in_channel",
                                                         "text": text})  # fmt: skip
            answer.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("the public note of a kudos was not posted to Slack: %r", exc)


class _Slack(BaseModel):
    """What Rapport reads of a Slack payload (Slack sends more, and adds fields)."""

    model_config = ConfigDict(extra="ignore")


class Command(_Slack):
    team_id: str
    user_id: str
    api_app_id: str = ""
    channel_id: str = ""
    text: str = ""
    response_url: str = ""


class Envelope(_Slack):
    """An Events API delivery; its ``event`` is read further only if Rapport wants it."""

    type: str
    challenge: str = ""
    team_id: str = ""
    api_app_id: str = ""
    event: dict[str, Any] = {}


class Item(_Slack):
    type: str
    channel: str = ""
    ts: str = ""


class ReactionAdded(_Slack):
    reaction: str
    user: str
    item_user: str = ""
    item: Item


def parsed(model: type[M], data: Any, *at: str) -> M:
    """``data`` as ``model``, or a 422 naming each field at fault (``at`` is where
    ``data`` is in the body)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *at, *e["loc"])} for e in exc.errors()]
        ) from None


def check_workspace(settings: RecognitionSettings, team_id: str, app_id: str) -> None:
    """403 for a request signed with the app's secret for another workspace or app (the
    same app installed elsewhere, say): it counts nothing here."""
    for what, want, got in (("workspace", settings.slack_team_id, team_id),
                            ("app", settings.slack_app_id, app_id)):  # fmt: skip
        if want is not None and got != want:
            raise HTTPException(403, f"this request is for another Slack {what} ({got[:32]!r})")


async def record_command(cmd: Command, kudos: Kudos, parts: Parts[RecognitionSettings]) -> bool:
    """Check and publish a ``/kudos``; whether the broker acknowledged it."""
    giver, recipients = await kudos_of(kudos, cmd.user_id, parts.settings, parts.directory)
    day = datetime.now(UTC).date().isoformat()
    recognition = RecognitionIn(
        giver_id=giver.id,
        recipient_ids=tuple(dict.fromkeys(p.id for p in recipients)),
        message=kudos.message,
        values=kudos.values,
        channel="slack",
        event_id=event_id("command", cmd.team_id, cmd.user_id, cmd.channel_id, cmd.text, day),
    )
    return await published(recognition, parts)


@router.post("/commands")
async def command(
    signed: SignedBody,
    background: BackgroundTasks,
    parts: PartsDep,
) -> dict[str, str]:
    """``/kudos @alice #growth what they did``: one recognition; the answer is only seen
    by the person who sent it, and names what was recorded or what to change."""
    try:
        fields = parse_qs(signed.body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise HTTPException(400, "not a slash command: the body is not UTF-8") from None
    cmd = parsed(Command, {k: v[0] for k, v in fields.items()})
    check_workspace(parts.settings, cmd.team_id, cmd.api_app_id)
    signed.answered()  # Slack does not send a command again: every answer is final
    kudos = Kudos.parse(cmd.text)
    try:
        async with asyncio.timeout(ANSWER_WITHIN_S):  # Slack's patience, the directory's too
            recorded = await record_command(cmd, kudos, parts)
    except Refused as refusal:
        return ephemeral(str(refusal))
    except (TimeoutError, Unavailable):  # the directory could not be read in time
        recorded = False
    if not recorded:
        return ephemeral(
            "Rapport couldn't record your kudos just now (its event broker did not answer). "
            "Please send the same `/kudos` again in a minute: it will count once."
        )
    said = f"{mentions(kudos.mentions)} for {tags(kudos.values)}"
    if parts.settings.slack_public_confirmations and cmd.response_url:
        note = f"<@{cmd.user_id}> recognized {said}: {escape(kudos.message)}"
        background.add_task(post_in_channel, cmd.response_url, note)
    return ephemeral(f"Kudos recorded: you recognized {said}. Thank you!")


@dataclass(frozen=True)
class Reaction:
    """A reaction that may be a kudos: who reacted, to whose message, where."""

    team: str
    channel: str
    ts: str
    reactor: str
    author: str

    @classmethod
    def of(cls, envelope: Envelope, emoji: str | None) -> Reaction | None:
        """The reaction in a Slack event, if it is the configured emoji on a message; a
        422 naming the field if a ``reaction_added`` event is not one."""
        if (
            emoji is None
            or envelope.type != "event_callback"
            or envelope.event.get("type") != "reaction_added"
        ):
            return None
        event = parsed(ReactionAdded, envelope.event, "event")
        if event.reaction.split("::")[0] != emoji or event.item.type != "message":  # any skin
            return None
        return cls(envelope.team_id, event.item.channel, event.item.ts, event.user,
                   event.item_user)  # fmt: skip


@router.post("/events")
async def events(
    signed: SignedBody,
    background: BackgroundTasks,
    parts: PartsDep,
) -> Response:
    """Slack's Events API: the URL check, and reactions as kudos when switched on. An
    event that is not for Rapport is acknowledged, so that Slack does not send it again;
    a kudos the broker has not acknowledged gets 503, so that it does."""
    try:
        body = orjson.loads(signed.body)
    except orjson.JSONDecodeError:
        raise HTTPException(400, "not a Slack event: the body is not JSON") from None
    envelope = parsed(Envelope, body)
    if envelope.type == "url_verification":
        signed.answered()
        return JSONResponse({"challenge": envelope.challenge})
    settings = parts.settings
    check_workspace(settings, envelope.team_id, envelope.api_app_id)
    emoji = settings.slack_reaction_emoji
    reaction = Reaction.of(envelope, emoji)
    if reaction is not None:
        try:
            async with asyncio.timeout(ANSWER_WITHIN_S):
                recognition = await reaction_kudos(reaction, f":{emoji}:", settings,
                                                   parts.directory)  # fmt: skip
                recorded = await published(recognition, parts)
        except (TimeoutError, Unavailable):
            recorded = False
        except Refused as refusal:
            background.add_task(tell, settings, reaction.channel, reaction.reactor, str(refusal))
            recorded = True  # nothing to record: told why, and answered
        if not recorded:  # nor marked answered: Slack delivers it again, and it counts once
            return JSONResponse({"error": "broker_unavailable"}, status_code=503)
    signed.answered()
    return JSONResponse({})


async def reaction_kudos(
    reaction: Reaction, emoji: str, settings: RecognitionSettings, directory: DirectoryView
) -> RecognitionIn:
    """The recognition a reaction gives, or :class:`Refused` saying why there is none."""
    if reaction.reactor == reaction.author:
        raise Refused(f"That is your own message: a {emoji} there is not a kudos.")
    giver = await directory.find_slack_user(reaction.reactor)
    if giver is None:
        raise not_in_directory([reaction.reactor], you=True)
    recipient = await directory.find_slack_user(reaction.author)
    if recipient is None:
        raise not_in_directory([reaction.author])
    return RecognitionIn(
        giver_id=giver.id,
        recipient_ids=(recipient.id,),
        message=f"Reacted with {emoji} in Slack",
        values=(str(settings.slack_reaction_value),),
        channel="slack",
        event_id=event_id("reaction", reaction.team, reaction.channel, reaction.ts,
                          reaction.reactor),
    )  # fmt: skip


async def tell(settings: RecognitionSettings, channel: str, user: str, text: str) -> None:
    """An ephemeral note to ``user`` in ``channel`` through Slack's Web API (bot token)."""
    if settings.slack_bot_token is None:
        log.info("a Slack reaction did not count (%s); no bot token to say so", text)
        return
    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(),
                            base_url=settings.slack_api_url)  # fmt: skip
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except Exception as exc:  # slack_sdk's errors and aiohttp's: a note lost, logged
        log.warning("a note to a Slack user was not sent: %r", exc)
