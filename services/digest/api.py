"""Routes of the digest service and its weekly schedule (contract: ARCHITECTURE §4)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from shared.contract.events import DirectoryEntry
from shared.figures import connections as cx
from shared.infra.auth import ApiKeys, Client, Require
from shared.infra.errors import BrokerUnavailable, InvalidInput, NotFound, NotReady
from shared.infra.kafka import Publisher
from shared.infra.subjects import SubjectKeys
from shared.infra.web import create_app, errors
from shared.readmodels.directory import DirectoryView
from shared.readmodels.questions import catalogue
from shared.readmodels.snapshots import CurrentSnapshots

from . import erasure, mail, render, service, subscriptions
from .delivery import Deliverer, DeliveryLog, DigestMetrics, Letter, Outcome
from .settings import DigestSettings
from .subscriptions import Subscriptions

log = logging.getLogger(__name__)
AdminDep = Annotated[Client, Depends(Require("digest:admin"))]
Week = Annotated[str | None, Query(pattern=r"^\d{4}-W\d{2}$", examples=["2026-W47"])]
GRAPH_TTL_S = 10.0
router = APIRouter(prefix="/v1/digests", responses=errors(401, 403, 413, 422, 429, 503))
# The links in each digest: the token in the link is the manager's only credential.
links = APIRouter(prefix="/v1/digests", responses=errors(403, 422, 503))
PAGE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/html": {}}, "description": "A page with the manager's choice"}
}
ManagerId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:@-]+$")]
LinkToken = Annotated[str, Query(min_length=43, max_length=43, pattern=r"^[A-Za-z0-9_-]+$")]


class RunResult(BaseModel):
    week: str
    outcomes: dict[str, Outcome]  # manager id -> what happened


class Digests:
    """Everything a digest needs: directory, snapshots, the delivery log, the sender."""

    def __init__(
        self, settings: DigestSettings, deliverer: Deliverer, smtp: mail.SmtpSender
    ) -> None:
        self.settings = settings
        self.smtp = smtp
        self.subjects = SubjectKeys(settings)  # to name people: their contacts are sealed
        self.directory = DirectoryView(settings, self.subjects)
        self.snapshots = CurrentSnapshots(settings)
        self.subscriptions = Subscriptions(settings)
        self.deliverer = deliverer
        self.questions = catalogue(settings)
        self.purged: set[str] = set()  # erased people whose copies are gone
        self._graphs: dict[tuple[date, int], tuple[float, cx.Graph]] = {}

    async def caught_up(self) -> None:
        """The directory and the snapshots as they are on the broker now; ``NotReady``
        while they are still being read (a large topic takes minutes at start-up, and a
        digest from part of them would be sent once, wrong), ``BrokerUnavailable``
        without a broker."""
        await self.subjects.sync()
        await self.directory.sync()
        await self.snapshots.sync()
        await self.subscriptions.sync()

    def build(self, manager_id: str, week: str) -> service.Digest:
        return service.build(
            manager_id,
            week,
            self.directory,
            self.snapshots.get,
            self.graph,
            self.questions,
            self.settings.anonymity_k,
        )

    def graph(self, last_day: date, days: int) -> cx.Graph:
        """Who recognized whom in a window, built at most every ``GRAPH_TTL_S``: a run
        builds every manager's digest from the same two graphs, and one of 100,000 people
        takes about a second."""
        now = monotonic()
        self._graphs = {k: v for k, v in self._graphs.items() if now - v[0] < GRAPH_TTL_S}
        if (last_day, days) not in self._graphs:
            teams = [self.snapshots.get(t) for t in self.snapshots.teams()]
            self._graphs[(last_day, days)] = (now, cx.graph(teams, last_day, days))
        return self._graphs[(last_day, days)][1]

    async def send(self, manager: DirectoryEntry, week: str, *, retry_failed: bool) -> Outcome:
        if manager.erased:
            return Outcome.ERASED
        if not self.subscriptions.subscribed(manager.id):
            return Outcome.UNSUBSCRIBED

        def message() -> Letter:
            digest = self.build(manager.id, week)
            return render.message(digest, self.settings), digest.named

        return await self.deliverer.deliver(manager.id, week, message, retry_failed=retry_failed)


def due_week(manager: DirectoryEntry, now: datetime, settings: DigestSettings) -> str | None:
    """The week whose digest is due for ``manager`` now: the last one, once its hour came."""
    tz = ZoneInfo(manager.timezone)
    local = now.astimezone(tz)
    monday = local.date() - timedelta(days=local.isoweekday() - 1)
    due_day = monday + timedelta(days=settings.digest_weekday - 1)
    if local < datetime.combine(due_day, time(settings.digest_hour), tz):
        return None
    return service.week_label(monday - timedelta(days=7))


FIRST_WEEK = date(2000, 1, 3)  # 2000-W01: nothing older is a digest anyone wants


def _week(week: str | None) -> str:
    """The requested week, checked: a real ISO week, complete in UTC (so a run cannot
    mark an unfinished week sent); by default the last complete one."""
    today = datetime.now(UTC).date()
    if week is None:
        return service.week_label(today - timedelta(days=7))
    try:
        first_day: date = service.parse_week(week)
    except ValueError as exc:
        raise InvalidInput("week", str(exc)) from None
    if first_day < FIRST_WEEK:
        raise InvalidInput("week", f"{week} is before 2000-W01")
    if first_day > today - timedelta(days=7):  # not "+ 7 days": 9999-W52 would overflow
        raise InvalidInput("week", f"{week} is not over yet (UTC); its digest comes after it")
    return week


async def get_digests(request: Request) -> Digests:
    digests: Digests = request.app.state.digests
    return digests


DigestsDep = Annotated[Digests, Depends(get_digests)]


@router.get(
    "/{manager_id}/preview",
    responses={200: {"content": {"text/html": {}}, "description": "The HTML"}, **errors(404)},
)
async def preview(
    manager_id: str, _: AdminDep, digests: DigestsDep, week: Week = None
) -> HTMLResponse:
    """The digest's HTML exactly as it would be sent for ``week`` (default: last week)."""
    label = _week(week)
    await digests.caught_up()
    try:
        d = digests.build(manager_id, label)
    except service.NotAManager as exc:
        raise NotFound(str(exc)) from None
    return HTMLResponse(render.preview(d, digests.settings))


@router.post("/run", response_model=RunResult)
async def run(_: AdminDep, digests: DigestsDep, week: Week = None) -> RunResult:
    """Send ``week``'s digests now to every manager not sent one yet (failed ones again)."""
    label = _week(week)
    await digests.caught_up()
    await digests.smtp.check()
    outcomes = {
        m.id: await digests.send(m, label, retry_failed=True) for m in digests.directory.managers()
    }
    return RunResult(week=label, outcomes=outcomes)


def _page(
    settings: DigestSettings, manager_id: str, subscribed: bool, changed: bool
) -> HTMLResponse:
    return HTMLResponse(render.subscription_page(
        subscribed, changed, unsubscribe=subscriptions.url(settings, manager_id),
        subscribe=subscriptions.url(settings, manager_id, "subscribe"),
    ))  # fmt: skip


def _checked(digests: Digests, manager_id: str, token: str) -> None:
    if not subscriptions.valid(digests.settings, manager_id, token):
        raise HTTPException(403, "this link is not valid: use the one in your latest digest")


@links.get("/unsubscribe/{manager_id}", responses=PAGE)
async def subscription(
    manager_id: ManagerId, token: LinkToken, digests: DigestsDep
) -> HTMLResponse:
    """The page a digest's unsubscribe link opens: the manager's choice and a button.
    Changes nothing (mail scanners follow links)."""
    _checked(digests, manager_id, token)
    await digests.subscriptions.sync()
    return _page(digests.settings, manager_id, digests.subscriptions.subscribed(manager_id), False)


async def _choose(
    request: Request, digests: Digests, manager_id: str, token: str, subscribed: bool
) -> HTMLResponse:
    _checked(digests, manager_id, token)
    await subscriptions.record(request.app.state.publisher, manager_id, subscribed)
    log.info("manager %s %s the digest", manager_id, "started" if subscribed else "stopped")
    return _page(digests.settings, manager_id, subscribed, True)


@links.post("/unsubscribe/{manager_id}", responses=PAGE)
async def unsubscribe(
    request: Request, manager_id: ManagerId, token: LinkToken, digests: DigestsDep
) -> HTMLResponse:
    """Stop the manager's digest (RFC 8058 one-click: the body is not needed), until they
    start it again. Answered once the broker acknowledged."""
    return await _choose(request, digests, manager_id, token, subscribed=False)


@links.post("/subscribe/{manager_id}", responses=PAGE)
async def subscribe(
    request: Request, manager_id: ManagerId, token: LinkToken, digests: DigestsDep
) -> HTMLResponse:
    """Start the manager's digest again."""
    return await _choose(request, digests, manager_id, token, subscribed=True)


async def send_due(digests: Digests) -> None:
    """Send every digest that is due and not sent yet."""
    try:
        await digests.caught_up()
    except (BrokerUnavailable, NotReady) as exc:
        log.info("no digests this round: %s", exc)
        return
    for manager in digests.directory.managers():
        week = due_week(manager, datetime.now(UTC), digests.settings)
        if week is not None:
            await digests.send(manager, week, retry_failed=False)


async def purge_erased(digests: Digests) -> None:
    """Purge the copies of every person erased since the last round (all of them once
    after a start: purging again changes nothing)."""
    outbox = digests.settings.outbox if digests.settings.smtp_host is None else None
    for person in digests.directory.people():
        if person.erased and person.id not in digests.purged:
            removed = await erasure.purge(person.id, digests.deliverer.deliveries,
                                          digests.deliverer, outbox)  # fmt: skip
            digests.purged.add(person.id)
            log.info("purged what the digest kept of an erased person: %d mail(s) from "
                     "the outbox", removed)  # fmt: skip


async def _schedule(digests: Digests, metrics: DigestMetrics) -> None:
    while True:
        # Wait first: at start-up, give the views a moment to take in what others publish.
        await asyncio.sleep(digests.settings.digest_check_s)
        try:
            await send_due(digests)
            await purge_erased(digests)
        except Exception:
            log.exception("sending due digests failed; trying again in the next round")
        else:
            metrics.rounds.inc()


def create(settings: DigestSettings | None = None) -> FastAPI:
    """Build the digest service app, with the weekly schedule running inside it."""
    settings = settings or DigestSettings()
    settings.check_secrets()
    api_keys = ApiKeys.from_settings(settings)
    host = mail.smtp_host(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api_keys = api_keys
        sink = mail.start_outbox(settings) if settings.smtp_host is None else None
        publisher = Publisher(settings)
        deliveries = DeliveryLog(settings)
        sender = mail.SmtpSender(settings, host)
        metrics = DigestMetrics(app.state.registry)
        app.state.digests = digests = Digests(
            settings, Deliverer(settings, deliveries, publisher, sender, metrics), sender
        )
        await publisher.start()
        await digests.subjects.start()
        await digests.directory.start()
        await digests.snapshots.start(wait=False)  # digests wait for it (caught_up)
        await digests.subscriptions.start()
        await deliveries.start()
        schedule = asyncio.create_task(_schedule(digests, metrics), name="digest-schedule")
        app.state.publisher = publisher
        try:
            yield
        finally:
            schedule.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await schedule
            for view in (deliveries, digests.subscriptions, digests.snapshots, digests.directory,
                         digests.subjects):  # fmt: skip
                await view.stop()
            await publisher.stop()
            if sink is not None:
                sink.stop()

    async def ready(app: FastAPI) -> bool:
        publisher: Publisher = app.state.publisher
        return await publisher.ping()

    app = create_app("Rapport digest service", lifespan, ready)
    app.include_router(router)
    app.include_router(links)
    return app
