"""SMTP out (aiosmtplib), and the local sink that stands in for a mail server in development.

The sink is a real SMTP server (aiosmtpd) that writes every message it receives to
``var/outbox/`` as an ``.eml`` file, so digests in development take the same path
as in production: rendered, sent over SMTP, accepted or refused.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from shared.infra.errors import SmtpUnavailable

from .settings import DigestSettings

log = logging.getLogger(__name__)


class PermanentFailure(Exception):
    """The digest cannot be delivered: refused by the server, or every try failed."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _permanent(exc: aiosmtplib.SMTPException) -> bool:
    """5xx answers are final; connection problems, timeouts and 4xx are worth a retry."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in exc.recipients)
    code = getattr(exc, "code", None)
    return isinstance(code, int) and 500 <= code < 600


SMTP_CHECK_S = 3.0  # a run answers 503 within this when the mail server is down


class SmtpSender:
    def __init__(self, settings: DigestSettings, host: str) -> None:
        self._settings = settings
        self._host = host

    async def check(self) -> None:
        """Raise :class:`SmtpUnavailable` unless the SMTP server greets within
        ``SMTP_CHECK_S``: a run then says so at once, not after every digest's retries."""
        smtp = aiosmtplib.SMTP(hostname=self._host, port=self._settings.smtp_port,
                               timeout=SMTP_CHECK_S, start_tls=False)  # fmt: skip
        try:
            async with asyncio.timeout(SMTP_CHECK_S):
                await smtp.connect()
                await smtp.quit()
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SmtpUnavailable(
                f"the SMTP server {self._host}:{self._settings.smtp_port} did not answer; "
                "no digest was sent"
            ) from exc
        finally:
            smtp.close()

    async def __call__(self, message: EmailMessage) -> None:
        s = self._settings
        # The envelope's recipients are the To header's parsed addresses (one per digest),
        # never re-read from header text.
        recipients = [a.addr_spec for a in message["To"].addresses]
        try:
            await aiosmtplib.send(
                message,
                recipients=recipients,
                hostname=self._host,
                port=s.smtp_port,
                start_tls=s.smtp_starttls,
                username=s.smtp_username,
                password=s.smtp_password.get_secret_value() if s.smtp_password else None,
                timeout=30,
            )
        except aiosmtplib.SMTPException as exc:
            if _permanent(exc):
                raise PermanentFailure("refused", str(exc)) from exc
            raise


class Outbox:
    """aiosmtpd handler: save each message as ``<time>-<id>.eml`` in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
        path = self.directory / f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        path.write_bytes(content)
        log.info("mail saved as %s", path)  # to whom is personal data: not for the log
        return "250 Message accepted for delivery"


def start_outbox(settings: DigestSettings) -> Controller:
    """Run the local SMTP sink on 127.0.0.1:``smtp_port`` (development, no SMTP host)."""
    controller = Controller(Outbox(settings.outbox), hostname="127.0.0.1", port=settings.smtp_port)
    controller.start()
    log.info("SMTP sink on 127.0.0.1:%d saves mail to %s", settings.smtp_port, settings.outbox)
    return controller


def smtp_host(settings: DigestSettings) -> str:
    """The configured SMTP host; the local sink's in development."""
    if settings.smtp_host is not None:
        return settings.smtp_host
    settings.check_secrets()
    return "127.0.0.1"
