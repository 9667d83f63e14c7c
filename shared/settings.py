"""Settings shared by every Rapport process (environment variables prefixed ``RAPPORT_``)."""

from __future__ import annotations

import ipaddress
from email.utils import getaddresses
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DIMENSIONS = (
    "direction",
    "empowerment",
    "appreciation",
    "growth",
    "transparency",
    "partnership",
    "wellbeing",
)
DEV_PSEUDONYM_KEY = "rapport-dev-pseudonym-key"
DEV_LINK_KEY = "rapport-dev-digest-link-key"
MIN_SECRET_LENGTH = 32  # API keys and the pseudonym key, outside development


class UnsafeSettings(RuntimeError):
    """Settings that would be unsafe outside development: each problem named."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "refusing to start outside development (RAPPORT_ENVIRONMENT=production):\n  - "
            + "\n  - ".join(problems)
        )
        self.problems = problems


class Settings(BaseSettings):
    """Configure broker, storage and security; every service extends this class."""

    model_config = SettingsConfigDict(
        env_prefix="RAPPORT_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["development", "production"] = Field(
        default="production",
        description="development: dev API key, dev pseudonym key, local mail sink and demo "
        "data (`make run`); production: every secret must be set.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="Kafka bootstrap servers; unset = embedded Tansu broker."
    )
    embedded_broker_port: int = 9092
    var_dir: Path = Path("var")
    api_keys: SecretStr | None = Field(
        default=None,
        description='JSON list of {"name", "key", "scopes"}; unset in development = dev key.',
    )
    values: tuple[str, ...] = DEFAULT_DIMENSIONS
    topic_partitions: int = 8
    topic_replication_factor: int = Field(
        default=1,
        ge=1,
        description="Copies of every topic; 3 in production (min.insync.replicas is then 2).",
    )
    recognition_retention_days: int = Field(
        default=0,
        ge=0,
        description="How long the recognition log is kept; 0 = forever. "
        "It is the source of truth: every figure is rebuilt from it.",
    )
    dedupe_horizon_days: int = Field(
        default=8,
        ge=7,
        description="How long an event id is remembered: the same "
        "(source, id) within it counts once, whatever else its records say.",
    )
    survey_retention_days: int = Field(
        default=28,
        ge=1,
        description="How long raw survey answers stay on their topics: "
        "the longest trust window (privacy).",
    )
    session_timeout_s: float | None = Field(
        default=None,
        description="Consumer session timeout: how long a dead worker holds "
        "its partitions; default 4 s embedded, 6 s (Kafka's least) else.",
    )
    publish_timeout_s: float = Field(
        default=4.0,
        gt=0,
        description="How long a request waits for the broker's acknowledgement before it "
        "answers 503 (with Retry-After): within 5 s, nothing hangs on a broker that is gone.",
    )
    rate_limit_per_s: float = Field(
        default=50,
        ge=0,
        description="Write requests a second per API key and replica, in bursts of twice "
        "that; 0 = off.",
    )
    anonymity_k: int = Field(
        default=5, ge=3, description="Fewest distinct respondents behind any trust figure."
    )
    comment_k: int = Field(default=5, ge=3, description="Fewest comments shown together.")
    trading_min: int = Field(
        default=5,
        ge=1,
        description="Gaming signal, trading pair: each of two people gave the other at least "
        "this many recognitions in the window...",
    )
    trading_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="...and at least this share of all they gave.",
    )
    ring_min: int = Field(
        default=5,
        ge=1,
        description="Gaming signal, ring: three or more people, each of whom gave at least "
        "this many recognitions in the window, all of them to one another.",
    )
    burst_min: int = Field(
        default=10,
        ge=1,
        description="Gaming signal, burst: one giver's recognitions in one hour, at least "
        "this many...",
    )
    burst_factor: float = Field(
        default=5.0,
        ge=1,
        description="...and at least this many times their usual rate (per active hour in "
        "the 28 days before).",
    )
    pseudonym_key: SecretStr = Field(
        default=SecretStr(DEV_PSEUDONYM_KEY),
        description="HMAC key that turns respondent ids into pseudonyms; required (at least "
        "32 characters) outside development.",
    )
    questions_file: Path | None = Field(
        default=None, description="YAML survey catalogue; unset = one item per dimension."
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server; unset in development = local sink to var/outbox."
    )
    smtp_port: int = 2525
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "Rapport <rapport@localhost>"
    mail_domain: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$",
        description="Fully qualified domain of each digest's Message-ID; unset = the domain "
        "of RAPPORT_MAIL_FROM.",
    )
    digest_public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Where managers' mail clients reach the digest service (the one-click "
        "unsubscribe link in each digest); required outside development, where unset = "
        "http://127.0.0.1:RAPPORT_DIGEST_PORT.",
    )
    digest_link_key: SecretStr = Field(
        default=SecretStr(DEV_LINK_KEY),
        description="HMAC key that signs each manager's unsubscribe link; required (at least "
        "32 characters) outside development.",
    )
    digest_weekday: int = Field(default=1, ge=1, le=7, description="ISO weekday: 1 = Monday.")
    digest_hour: int = Field(default=9, ge=0, le=23, description="Local hour of the manager.")
    digest_check_s: float = Field(
        default=30, gt=0, description="How often to look for due digests."
    )
    digest_attempts: int = Field(default=5, ge=1, description="SMTP tries before giving up.")
    digest_backoff_s: float = Field(default=2.0, ge=0, description="First retry delay; doubles.")
    demo: bool = Field(default=True, description="Seed demo data on `rapport run` (development).")
    slack_signing_secret: SecretStr | None = Field(
        default=None,
        description="The Slack app's signing secret: every Slack request is checked with it; "
        "unset = no Slack routes (404).",
    )
    slack_bot_token: SecretStr | None = Field(
        default=None,
        description="The Slack app's bot token (xoxb-...), for the notes a reaction that "
        "cannot count sends its author; unset = none sent.",
    )
    slack_api_url: str = Field(
        default="https://slack.com/api/", description="Slack's Web API (tests point it here)."
    )
    slack_public_confirmations: bool = Field(
        default=False,
        description="Also post each /kudos in its channel, naming the recipients and values.",
    )
    slack_reaction_emoji: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_+\-']{1,100}$",
        description="Reacting with this emoji (its name, no colons) recognizes the message's "
        "author; unset = off.",
    )
    slack_reaction_value: str | None = Field(
        default=None, description="The value a reaction gives (one of RAPPORT_VALUES)."
    )
    slack_team_id: str | None = Field(
        default=None,
        pattern=r"^T[A-Z0-9]{2,20}$",
        description="The Slack workspace (T...) whose requests count: one signed with the "
        "app's secret for another workspace is refused. Required with the signing secret "
        "outside development.",
    )
    slack_app_id: str | None = Field(
        default=None,
        pattern=r"^A[A-Z0-9]{2,20}$",
        description="The Slack app (A...) whose requests count; as RAPPORT_SLACK_TEAM_ID.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Proxies in front of the HTTP services, comma-separated addresses or "
        "networks (10.0.0.0/8): only behind one of them is the client taken from "
        "X-Forwarded-For; empty = the connecting address is the client's.",
    )
    host: str = "127.0.0.1"
    recognition_port: int = 8001
    feedback_port: int = 8002
    metrics_port: int = 8003
    digest_port: int = 8004
    aggregator_metrics_port: int = Field(
        default=8005, description="Where an aggregator worker serves /metrics; 0 = nowhere."
    )

    @model_validator(mode="after")
    def _reactions_have_a_value(self) -> Settings:
        if self.slack_reaction_emoji is not None and self.slack_reaction_value not in self.values:
            raise ValueError(
                "RAPPORT_SLACK_REACTION_VALUE must be one of RAPPORT_VALUES "
                f"{list(self.values)} when RAPPORT_SLACK_REACTION_EMOJI is set"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in filter(None, (i.strip() for i in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or network") from None
        return value

    @property
    def embedded(self) -> bool:
        """Whether to use the embedded broker (no broker configured); says nothing of secrets."""
        return self.kafka_bootstrap_servers is None

    @property
    def development(self) -> bool:
        """Whether development defaults apply: only when the settings say so."""
        return self.environment == "development"

    def check_secrets(
        self,
        *names: Literal["api_keys", "pseudonym_key", "smtp_host", "slack", "digest_links"],
    ) -> None:
        """Outside development, raise :class:`UnsafeSettings` naming each missing secret."""
        if self.development:
            return
        problems = []
        if "api_keys" in names and self.api_keys is None:
            problems.append("RAPPORT_API_KEYS is not set (JSON list of name, key, scopes)")
        key = self.pseudonym_key.get_secret_value()
        if "pseudonym_key" in names and (key == DEV_PSEUDONYM_KEY or len(key) < MIN_SECRET_LENGTH):
            problems.append(
                f"RAPPORT_PSEUDONYM_KEY must be a secret of at least {MIN_SECRET_LENGTH} "
                "characters (the default would let anyone re-identify respondents)"
            )
        if "slack" in names and self.slack_signing_secret is not None:
            problems += [f"RAPPORT_SLACK_{n.upper()}_ID is not set (requests of other Slack "
                         f"{what} signed with the app's secret would count)"
                         for n, what in (("team", "workspaces"), ("app", "apps"))
                         if getattr(self, f"slack_{n}_id") is None]  # fmt: skip
        if "smtp_host" in names and self.smtp_host is None:
            problems.append("RAPPORT_SMTP_HOST is not set (the SMTP server for digests)")
        if "digest_links" in names:
            link_key = self.digest_link_key.get_secret_value()
            if link_key == DEV_LINK_KEY or len(link_key) < MIN_SECRET_LENGTH:
                problems.append(f"RAPPORT_DIGEST_LINK_KEY must be a secret of at least "
                                f"{MIN_SECRET_LENGTH} characters (it signs unsubscribe "
                                "links)")  # fmt: skip
            if self.digest_public_url is None:
                problems.append("RAPPORT_DIGEST_PUBLIC_URL is not set (where mail clients "
                                "reach the digest service to unsubscribe)")  # fmt: skip
        if problems:
            raise UnsafeSettings(problems)

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
    def bootstrap_servers(self) -> str:
        if self.kafka_bootstrap_servers is not None:
            return self.kafka_bootstrap_servers
        return f"127.0.0.1:{self.embedded_broker_port}"

    @property
    def session_timeout(self) -> float:
        # Tansu waits session_timeout/2 before completing a group join: keep it short there.
        # On Kafka, a killed worker's partitions wait this long before moving: 6 s is the
        # least a broker accepts by default (README, "How a worker takes over").
        if self.session_timeout_s is not None:
            return self.session_timeout_s
        return 4.0 if self.embedded else 6.0

    @property
    def dev_key_file(self) -> Path:
        return self.var_dir / "dev-api-key"

    @property
    def outbox(self) -> Path:
        return self.var_dir / "outbox"
