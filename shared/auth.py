"""API keys with scopes and rate limits (ARCHITECTURE §4).

401 without a valid key, 403 with the wrong scope, 429 past the key's rate limit.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, TypeAdapter

from shared.settings import Settings

SCOPES = frozenset({"recognition:write", "feedback:write", "directory:write", "digest:admin"})
DEV_CLIENT = "dev"


class KeyConfig(BaseModel):
    name: str
    key: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Client:
    """Who is calling: the key's name (part of every event's ce_source) and its scopes."""

    name: str
    scopes: frozenset[str]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class TokenBucket:
    """``rate`` requests a second on average, in bursts of up to ``rate`` (at least one)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = self.burst
        self._last = time.monotonic()

    def take(self) -> float:
        """Take one token; return 0, or the seconds to wait when there is none."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


class ApiKeys:
    def __init__(self, configs: list[KeyConfig], rate_limit: float = 0) -> None:
        unknown = {s for c in configs for s in c.scopes} - SCOPES
        if unknown:
            raise ValueError(f"unknown scope(s) in RAPPORT_API_KEYS: {sorted(unknown)}")
        self._clients = {_digest(c.key): Client(c.name, c.scopes) for c in configs}
        # Per key and per replica: a runaway client cannot flood the broker.
        self._buckets = {c.name: TokenBucket(rate_limit) for c in configs} if rate_limit else {}

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        """Load configured keys; in embedded mode without keys, use the dev key."""
        limit = settings.rate_limit_per_s
        if settings.api_keys is not None:
            raw = settings.api_keys.get_secret_value()
            return cls(TypeAdapter(list[KeyConfig]).validate_json(raw), limit)
        if not settings.embedded:
            raise RuntimeError("RAPPORT_API_KEYS must be set outside embedded mode")
        dev = KeyConfig(name=DEV_CLIENT, key=ensure_dev_key(settings), scopes=SCOPES)
        return cls([dev], limit)

    def authenticate(self, token: str) -> Client | None:
        return self._clients.get(_digest(token))

    def wait_needed(self, client: Client) -> float:
        """Seconds until ``client`` may send again (0: now)."""
        bucket = self._buckets.get(client.name)
        return bucket.take() if bucket is not None else 0.0


def ensure_dev_key(settings: Settings) -> str:
    """Return the embedded-mode dev key, creating ``var/dev-api-key`` on first use."""
    path = settings.dev_key_file
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        key = f"rapport-dev-{secrets.token_urlsafe(24)}"
        f.write(key + "\n")
    return key


_bearer = HTTPBearer(auto_error=False)


def require(scope: str) -> Callable[..., Awaitable[Client]]:
    """Dependency: the calling client, which must hold ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Client:
        keys: ApiKeys = request.app.state.api_keys
        client = keys.authenticate(credentials.credentials) if credentials else None
        if client is None:
            raise HTTPException(
                401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if scope not in client.scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        wait = keys.wait_needed(client)
        if wait:
            retry = str(max(1, math.ceil(wait)))
            raise HTTPException(429, "rate limit exceeded; retry later", {"Retry-After": retry})
        return client

    return dependency
