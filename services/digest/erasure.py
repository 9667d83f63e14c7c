"""What the digest service keeps of an erased person, purged: the local outbox's copies
of every digest sent to them or naming them, and SMTP errors kept in the delivery log
for a digest to them (they may quote their address).

Names are never kept beside it: a digest is built from the directory when it is sent,
and an erased person's entry names them no more (``shared.readmodels.directory``).
"""

from __future__ import annotations

import asyncio
from email.parser import BytesHeaderParser
from pathlib import Path

from .delivery import Deliverer, DeliveryLog


async def purge(
    person_id: str, deliveries: DeliveryLog, deliverer: Deliverer, outbox: Path | None
) -> int:
    """Purge what the digest service keeps of ``person_id``; return the outbox files
    removed. Doing it again changes nothing."""
    entries = deliveries.naming(person_id)
    message_ids = {e.message_id for e in entries if e.message_id is not None}
    removed = 0
    if outbox is not None and message_ids:
        removed = await asyncio.to_thread(remove_mail, outbox, message_ids)
    for entry in entries:
        if entry.manager_id == person_id and entry.reason is not None:
            await deliverer.write(entry.model_copy(update={"reason": None}))
    return removed


def remove_mail(outbox: Path, message_ids: set[str]) -> int:
    """Remove the mails in ``outbox`` with one of ``message_ids``; return how many."""
    removed = 0
    parser = BytesHeaderParser()
    for path in sorted(outbox.glob("*.eml")):
        with path.open("rb") as f:
            if parser.parse(f).get("Message-ID") in message_ids:
                path.unlink(missing_ok=True)
                removed += 1
    return removed
