"""Send each (manager, week) digest once, across restarts and replicas, and never lose one.

The delivery log is a compacted topic keyed by ``manager/week``. A replica that wants to
send first appends a *claim* with a lease, reads the log back, and sends only if the
first live claim is its own: the log's order decides between replicas. The outcome,
``sent`` or ``failed``, is appended after the SMTP server answers. A replica that dies
holding a claim leaves it to expire; the digest is then sent by whoever claims next
(if it died after the SMTP server accepted the mail but before logging it, that one
digest goes out twice: the only case that can).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from enum import StrEnum
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import DIGEST_DELIVERY, DigestDelivery
from shared.infra.kafka import Publisher, Record
from shared.infra.views import TopicView, read_event

from .mail import PermanentFailure
from .settings import DigestSettings

log = logging.getLogger(__name__)
LEASE = timedelta(minutes=5)  # longer than every SMTP try and back-off together
Letter = tuple[EmailMessage, tuple[str, ...]]  # a digest's message, and whom it names


class Outcome(StrEnum):
    SENT = "sent"
    ALREADY_SENT = "already_sent"
    BUSY = "busy"  # another replica holds a live claim
    FAILED = "failed"
    UNSUBSCRIBED = "unsubscribed"  # the manager stopped the digest
    ERASED = "erased"  # the manager was erased: there is no one to send it to


class DeliveryLog(TopicView):
    topic = topics.DIGEST_LOG

    def __init__(self, settings: DigestSettings) -> None:
        super().__init__(settings)
        self._entries: dict[str, list[DigestDelivery]] = {}

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if key is None or (entry := read_event(DigestDelivery, key, headers, value)) is None:
            return
        entries = self._entries.setdefault(key.decode(), [])
        if entry.state != "claimed":
            entries.clear()  # an outcome settles every claim before it
        entries.append(entry)

    def outcome(self, key: str) -> str | None:
        entries = self._entries.get(key, [])
        return entries[0].state if entries and entries[0].state != "claimed" else None

    def naming(self, person_id: str) -> list[DigestDelivery]:
        """The settled deliveries to ``person_id`` or naming them."""
        return [e[0] for e in self._entries.values() if e and e[0].state != "claimed"
                and (e[0].manager_id == person_id or person_id in e[0].named)]  # fmt: skip

    def holder(self, key: str, now: datetime) -> str | None:
        """The replica whose claim came first among the live ones."""
        live = (e for e in self._entries.get(key, []) if e.until is not None and e.until > now)
        return next((e.owner for e in live), None)


class DigestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sends = Counter(
            "rapport_digest_sends", "Digest e-mails accepted by the SMTP server.", registry=registry
        )
        self.failures = Counter(
            "rapport_digest_failures",
            "Digests given up on, by reason: refused by the SMTP server, every try failed, "
            "or the digest could not be built.",
            ["reason"],
            registry=registry,
        )
        for reason in ("refused", "retries_exhausted", "unbuildable"):
            self.failures.labels(reason)  # a series at 0 from the start
        self.rounds = Counter(
            "rapport_digest_schedule_rounds",
            "Rounds of the weekly schedule completed (each sends whatever is due).",
            registry=registry,
        )
        self.retries = Counter(
            "rapport_digest_retries", "SMTP tries repeated after a transient error.",
            registry=registry,
        )  # fmt: skip


class Deliverer:
    def __init__(
        self,
        settings: DigestSettings,
        deliveries: DeliveryLog,
        publisher: Publisher,
        send: Callable[[EmailMessage], Awaitable[Any]],
        metrics: DigestMetrics,
    ) -> None:
        self._settings = settings
        self.deliveries = deliveries
        self._publisher = publisher
        self._send = send
        self._metrics = metrics
        self.replica = uuid.uuid4().hex

    async def _append(self, manager_id: str, week: str, state: str, **extra: Any) -> None:
        await self.write(DigestDelivery(manager_id=manager_id, week=week, state=state,
                                        owner=self.replica, **extra))  # fmt: skip

    async def write(self, entry: DigestDelivery) -> None:
        manager_id, week = entry.manager_id, entry.week
        now = datetime.now(UTC)
        ce = CloudEvent(uuid.uuid4().hex, "/rapport/digest", DIGEST_DELIVERY, now,
                        entry.model_dump(mode="json"))  # fmt: skip
        await self._publisher.publish([Record.of(topics.DIGEST_LOG, f"{manager_id}/{week}", ce)])

    async def deliver(
        self, manager_id: str, week: str, build: Callable[[], Letter], *, retry_failed: bool
    ) -> Outcome:
        """Send one digest unless it was sent, or another replica is sending it."""
        key = f"{manager_id}/{week}"
        await self.deliveries.sync()
        outcome = self.deliveries.outcome(key)
        if outcome == "sent" or (outcome == "failed" and not retry_failed):
            return Outcome.ALREADY_SENT
        if self.deliveries.holder(key, datetime.now(UTC)) is not None:
            return Outcome.BUSY
        await self._append(manager_id, week, "claimed", until=datetime.now(UTC) + LEASE)
        await self.deliveries.sync()
        if self.deliveries.holder(key, datetime.now(UTC)) != self.replica:
            return Outcome.BUSY
        try:
            message, named = self._build(key, build)
            await self._send_with_retries(message)
        except PermanentFailure as exc:
            self._metrics.failures.labels(exc.reason).inc()
            log.error("digest %s not delivered: %s", key, exc)
            await self._append(manager_id, week, "failed", reason=str(exc)[:500])
            return Outcome.FAILED
        self._metrics.sends.inc()
        await self._append(manager_id, week, "sent", message_id=str(message["Message-ID"]),
                           named=named)  # fmt: skip
        log.info("digest %s sent", key)  # to whom is personal data: not for the log
        return Outcome.SENT

    @staticmethod
    def _build(key: str, build: Callable[[], Letter]) -> Letter:
        """The message; a digest that cannot be built fails alone, not the whole run."""
        try:
            return build()
        except PermanentFailure:
            raise
        except Exception as exc:  # one manager's data, whatever is wrong with it
            log.exception("digest %s could not be built", key)
            raise PermanentFailure("unbuildable", f"{type(exc).__name__}: {exc}") from exc

    async def _send_with_retries(self, message: EmailMessage) -> None:
        delay = self._settings.digest_backoff_s
        for attempt in range(1, self._settings.digest_attempts + 1):
            try:
                await self._send(message)
                return
            except PermanentFailure:
                raise
            except Exception as exc:  # transient: connection refused, 4xx, timeout
                if attempt == self._settings.digest_attempts:
                    raise PermanentFailure("retries_exhausted", repr(exc)) from exc
                self._metrics.retries.inc()
                log.warning("SMTP try %d failed (%r); retrying in %.1f s", attempt, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
