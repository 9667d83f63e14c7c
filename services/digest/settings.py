"""The digest service's settings: its port, the mail server, the unsubscribe links and
when digests go out."""

from __future__ import annotations

from email.utils import getaddresses
from pathlib import Path

from pydantic import Field, SecretStr

from shared.infra.settings import MIN_SECRET_LENGTH, ApiSettings, SurveySettings

DEV_LINK_KEY = "rapport-dev-digest-link-key"


class DigestSettings(ApiSettings, SurveySettings):
    """The digest service: each manager's weekly e-mail."""

    digest_port: int = Field(default=8004, description="The digest service's port.")
    smtp_host: str | None = Field(
        default=None,
        description="SMTP server for digests; required outside development. Unset in "
        "development = a local sink that saves each message under RAPPORT_VAR_DIR/outbox/.",
        examples=["smtp.example.com"],
    )
    smtp_port: int = Field(
        default=2525, description="SMTP port (in development, the local sink's too)."
    )
    smtp_starttls: bool = Field(default=False, description="Upgrade to TLS with STARTTLS.")
    smtp_username: str | None = Field(default=None, description="SMTP login, if needed.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password.")
    mail_from: str = Field(
        default="Rapport <rapport@localhost>",
        description="Sender of digests.",
        examples=["Rapport <rapport@example.com>"],
    )
    mail_domain: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$",
        description="Fully qualified domain of each digest's Message-ID; unset = the domain "
        "of RAPPORT_MAIL_FROM.",
        examples=["example.com"],
    )
    digest_public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Where managers' mail clients reach the digest service (the one-click "
        "unsubscribe link in each digest); required outside development, where unset = "
        "http://127.0.0.1:RAPPORT_DIGEST_PORT.",
        examples=["https://rapport.example.com/digest"],
    )
    digest_link_key: SecretStr = Field(
        default=SecretStr(DEV_LINK_KEY),
        description="HMAC key that signs each manager's unsubscribe link; required (at least "
        f"{MIN_SECRET_LENGTH} characters) outside development.",
    )
    digest_weekday: int = Field(
        default=1, ge=1, le=7, description="When digests go out: ISO weekday, 1 = Monday..."
    )
    digest_hour: int = Field(
        default=9, ge=0, le=23, description="...and hour, in each manager's own time zone."
    )
    digest_check_s: float = Field(
        default=30, gt=0, description="How often to look for due digests."
    )
    digest_attempts: int = Field(default=5, ge=1, description="SMTP tries before giving up.")
    digest_backoff_s: float = Field(
        default=2.0, ge=0, description="First delay between SMTP tries; doubles each time."
    )

    def unsafe(self) -> list[str]:
        problems = super().unsafe()
        if self.smtp_host is None:
            problems.append("RAPPORT_SMTP_HOST is not set (the SMTP server for digests)")
        link_key = self.digest_link_key.get_secret_value()
        if link_key == DEV_LINK_KEY or len(link_key) < MIN_SECRET_LENGTH:
            problems.append(
                f"RAPPORT_DIGEST_LINK_KEY must be a secret of at least {MIN_SECRET_LENGTH} "
                "characters (it signs unsubscribe links)"
            )
        if self.digest_public_url is None:
            problems.append(
                "RAPPORT_DIGEST_PUBLIC_URL is not set (where mail clients reach the digest "
                "service to unsubscribe)"
            )
        return problems

    @property
    def digest_url(self) -> str:
        """The digest service's address as mail clients reach it, without a final slash."""
        url = self.digest_public_url or f"http://127.0.0.1:{self.digest_port}"
        return url.rstrip("/")

    @property
    def message_id_domain(self) -> str:
        """The domain of Message-IDs: ``mail_domain``, else the sender's."""
        if self.mail_domain is not None:
            return self.mail_domain
        return getaddresses([self.mail_from])[0][1].rpartition("@")[2] or "localhost"

    @property
    def outbox(self) -> Path:
        return self.var_dir / "outbox"
