"""What every Rapport process is configured with (environment variables prefixed
``RAPPORT_``, or a ``.env`` file), and the parts several services share.

Each service has its own class built on these (``services/<service>/settings.py``), and
``services.settings`` writes ``.env.example`` and the README's configuration table from
all of them: a field's description is its documentation."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
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
MIN_SECRET_LENGTH = 32  # API keys and the pseudonym key, outside development
# What an API key may do (shared.infra.auth checks them; RAPPORT_API_KEYS's description
# lists them).
SCOPES = frozenset(
    {
        "recognition:write",
        "feedback:write",
        "feedback:admin",
        "directory:write",
        "digest:admin",
        "privacy:admin",
    }
)


class UnsafeSettings(RuntimeError):
    """Settings that would be unsafe outside development: each problem named."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "refusing to start outside development (RAPPORT_ENVIRONMENT=production):\n  - "
            + "\n  - ".join(problems)
        )
        self.problems = problems


class Settings(BaseSettings):
    """Every process: the broker, the topics, where local state goes."""

    model_config = SettingsConfigDict(
        env_prefix="RAPPORT_", env_file=".env", extra="ignore", frozen=True
    )

    environment: Literal["development", "production"] = Field(
        default="production",
        description="development (what `make run` sets): a dev API key, a dev key for "
        "digest links, a local mail sink and demo data; production: every "
        "secret must be set, and each process names each one that is missing.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers; unset = the embedded broker (Tansu) on "
        "127.0.0.1. Says nothing about secrets.",
        examples=["kafka-1:9092,kafka-2:9092"],
    )
    embedded_broker_port: int = Field(
        default=9092, description="Port of the embedded broker (when no Kafka is set)."
    )
    var_dir: Path = Field(
        default=Path("var"),
        description="Where local state goes: the dev API key, the local mail sink's outbox.",
    )
    host: str = Field(
        default="127.0.0.1", description="Address the HTTP services and /metrics listen on."
    )
    values: tuple[str, ...] = Field(
        default=DEFAULT_DIMENSIONS,
        description="Recognition values (JSON list); default: the seven trust dimensions.",
    )
    topic_partitions: int = Field(
        default=8,
        ge=1,
        description="Partitions of the recognition and fact topics (topics are created by "
        "`rapport topics`, and by `rapport run`).",
    )
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
    survey_retention_days: int = Field(
        default=28,
        ge=1,
        description="How long raw survey answers, and the keys that open them, stay on "
        "their topics: the longest trust window (privacy). An answer counts if its round "
        "closes within this time of it.",
    )
    forget_within_s: int = Field(
        default=3600,
        ge=2,
        description="How soon a deleted record that must be forgotten (a closed round's "
        "answers and respondent key) is gone from Apache Kafka's disks, a minute or more "
        "(Kafka's log cleaner looks every 15 s). The embedded broker keeps everything in "
        "memory until it stops.",
    )
    session_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Consumer session timeout: how long a killed worker holds its "
        'partitions (README, "How a worker takes over"); unset = 4 s on the embedded '
        "broker, 6 s (Kafka's least) on Kafka.",
    )
    publish_timeout_s: float = Field(
        default=4.0,
        gt=0,
        description="How long a request waits for the broker's acknowledgement before it "
        "answers 503 (with Retry-After): within 5 s, nothing hangs on a broker that is gone.",
    )

    @property
    def embedded(self) -> bool:
        """Whether to use the embedded broker (no broker configured); says nothing of secrets."""
        return self.kafka_bootstrap_servers is None

    @property
    def development(self) -> bool:
        """Whether development defaults apply: only when the settings say so."""
        return self.environment == "development"

    def unsafe(self) -> list[str]:
        """What would be unsafe outside development, each named (every class adds its own)."""
        return []

    def check_secrets(self) -> None:
        """Outside development, raise :class:`UnsafeSettings` naming each missing secret."""
        if not self.development and (problems := self.unsafe()):
            raise UnsafeSettings(problems)

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


class HttpSettings(Settings):
    """The HTTP services (recognition, feedback, metrics, digest)."""

    trusted_proxies: str = Field(
        default="",
        description="Proxies in front of the HTTP services, comma-separated addresses or "
        "networks: only a request through one of them has its client read from "
        "X-Forwarded-For (what invalid-key slow-downs count by); empty = the connecting "
        "address is the client's.",
        examples=["10.0.0.0/8"],
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in filter(None, (i.strip() for i in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or network") from None
        return value


DEV_MASTER_KEY = "d0" * 32


class SealingSettings(Settings):
    """What seals personal data, or reads it (``shared.infra.sealing``)."""

    master_key: SecretStr = Field(
        default=SecretStr(DEV_MASTER_KEY),
        description="The master key that wraps every person's data key and every survey "
        "answer's: 64 hex digits "
        "(openssl rand -hex 32). Required outside development; give every service the "
        "same. Lost, nothing sealed can be read again.",
    )

    @field_validator("master_key")
    @classmethod
    def _hex(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError("must be 64 hex digits (32 bytes: openssl rand -hex 32)")
        return value

    def unsafe(self) -> list[str]:
        problems = super().unsafe()
        if self.master_key.get_secret_value() == DEV_MASTER_KEY:
            problems.append("RAPPORT_MASTER_KEY is not set (64 hex digits: openssl rand -hex 32)")
        return problems


class ApiSettings(HttpSettings, SealingSettings):
    """The services callers write through with an API key (recognition, feedback, digest)."""

    api_keys: SecretStr | None = Field(
        default=None,
        description='API keys: a JSON list of {"name", "key", "scopes"}, each key at least '
        f"{MIN_SECRET_LENGTH} characters. Scopes: {', '.join(sorted(SCOPES))}. Required "
        "outside development; in development a dev key with every scope is written to "
        "RAPPORT_VAR_DIR/dev-api-key.",
        examples=[
            '[{"name": "slack-bot", "key": "<32+ random characters>", '
            '"scopes": ["recognition:write"]}]'
        ],
    )
    rate_limit_per_s: float = Field(
        default=50,
        ge=0,
        description="Write requests a second per API key and per service replica, in bursts "
        "of twice that (429 with Retry-After past it); 0 = off.",
    )

    def unsafe(self) -> list[str]:
        problems = super().unsafe()
        if self.api_keys is None:
            problems.append("RAPPORT_API_KEYS is not set (JSON list of name, key, scopes)")
        return problems


class PrivacySettings(Settings):
    """What publishes figures about people (metrics, digest, aggregator)."""

    anonymity_k: int = Field(
        default=5,
        ge=3,
        description="Fewest people behind any published figure: a team with fewer active "
        "members has none on /metrics, and a trust figure needs this many distinct "
        "respondents (never below 3).",
    )


class SurveySettings(PrivacySettings):
    """What reads survey answers (feedback service, aggregator, digest)."""

    questions_file: Path | None = Field(
        default=None,
        description="YAML survey catalogue (items with id, dimension, text; optional enps "
        "question text); unset = one item per dimension. Give every service the same file.",
        examples=["questions.yaml"],
    )
