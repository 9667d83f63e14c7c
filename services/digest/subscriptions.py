"""Who receives the weekly digest: each manager can stop it from the mail and start it again.

Every digest carries ``List-Unsubscribe`` and ``List-Unsubscribe-Post`` (RFC 8058): a
mail client's "Unsubscribe" POSTs to the link, and the digest service records it on a
compacted topic keyed by manager id, which every replica reads before sending. The link
is the manager's id and an HMAC of it under ``RAPPORT_DIGEST_LINK_KEY``: it cannot be
guessed for another manager, and it stays the same from week to week, so the link in an
old digest still works. A GET on it changes nothing (mail scanners follow links); it
shows a page with the button.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import quote

from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import DIGEST_SUBSCRIPTION, DigestSubscription
from shared.infra.kafka import Publisher, Record
from shared.infra.views import TopicView, read_event

from .settings import DigestSettings


def token(settings: DigestSettings, manager_id: str) -> str:
    """The manager's link token: 43 URL-safe characters."""
    key = settings.digest_link_key.get_secret_value().encode()
    mac = hmac.new(key, b"digest-subscription\0" + manager_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def valid(settings: DigestSettings, manager_id: str, given: str) -> bool:
    return hmac.compare_digest(token(settings, manager_id), given)


def url(settings: DigestSettings, manager_id: str, action: str = "unsubscribe") -> str:
    """The link to stop (or start) ``manager_id``'s digest."""
    path = f"/v1/digests/{action}/{quote(manager_id, safe='')}"
    return f"{settings.digest_url}{path}?token={token(settings, manager_id)}"


class Subscriptions(TopicView):
    """Each manager's last word; a manager who never said anything receives the digest."""

    topic = topics.DIGEST_SUBSCRIPTIONS

    def __init__(self, settings: DigestSettings) -> None:
        super().__init__(settings)
        self._stopped: set[str] = set()

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if key is None or (entry := read_event(DigestSubscription, key, headers, value)) is None:
            return
        if entry.subscribed:
            self._stopped.discard(entry.manager_id)
        else:
            self._stopped.add(entry.manager_id)

    def subscribed(self, manager_id: str) -> bool:
        return manager_id not in self._stopped

    def unsubscribed(self) -> int:
        return len(self._stopped)


async def record(publisher: Publisher, manager_id: str, subscribed: bool) -> None:
    """Append the manager's choice; it holds once the broker acknowledged it."""
    entry = DigestSubscription(manager_id=manager_id, subscribed=subscribed)
    ce = CloudEvent(uuid.uuid4().hex, "/rapport/digest", DIGEST_SUBSCRIPTION, datetime.now(UTC),
                    entry.model_dump(mode="json"))  # fmt: skip
    await publisher.publish([Record.of(topics.DIGEST_SUBSCRIPTIONS, manager_id, ce)])
