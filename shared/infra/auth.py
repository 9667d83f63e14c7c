"""API keys with scopes and rate limits (ARCHITECTURE §4).

401 without a valid key, 403 with the wrong scope, 429 past the key's rate limit, and
429 for an address that keeps presenting invalid keys (guessing is slowed down).

A request with a valid key is judged by that key alone: however many wrong keys came from
its address (a shared proxy, a NAT), it is never slowed down for them. The address is
the peer's, unless the peer is a proxy named in ``RAPPORT_TRUSTED_PROXIES``
(``shared.infra.server``): only then does ``X-Forwarded-For`` say who the client is.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel, TypeAdapter

from shared.infra.settings import MIN_SECRET_LENGTH, SCOPES, ApiSettings, Settings, UnsafeSettings

DEV_CLIENT = "dev"
# Invalid keys one address may present in a burst, then one a second; addresses tracked.
FAILED_BURST = 10
FAILED_PER_S = 1.0
FAILED_ADDRESSES = 10_000


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
    """``rate`` requests a second on average, in bursts of up to ``burst`` (default: twice
    the rate, at least one)."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(1.0, 2 * rate if burst is None else burst)
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

    def peek(self) -> float:
        """Like :meth:`take`, without taking a token."""
        now = time.monotonic()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


class FailedKeys:
    """Invalid credentials per client address: past a burst, that address waits (429).

    One for API keys, one for Slack signatures: a forged Slack request never slows an
    API client down, nor the other way round."""

    def __init__(self, what: str = "API keys") -> None:
        self.what = what  # named in the 429
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def refuse(self, request: Request) -> None:
        """Count one invalid credential from ``request``'s client; raise 429 if its address
        is past the burst (the caller answers 401 otherwise)."""
        address = request.client.host if request.client else "unknown"
        if wait := self.wait_needed(address):
            raise HTTPException(
                429,
                f"too many invalid {self.what} from this address; retry later",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        self.failed(address)

    def wait_needed(self, address: str) -> float:
        """Seconds ``address`` must wait before presenting another key (0: now)."""
        bucket = self._buckets.get(address)
        return bucket.peek() if bucket is not None else 0.0

    def failed(self, address: str) -> None:
        bucket = self._buckets.pop(address, None) or TokenBucket(FAILED_PER_S, FAILED_BURST)
        self._buckets[address] = bucket  # most recent last: the oldest go first
        bucket.take()
        if len(self._buckets) > FAILED_ADDRESSES:
            self._buckets.popitem(last=False)


class ApiKeys:
    def __init__(self, configs: list[KeyConfig], rate_limit: float = 0) -> None:
        unknown = {s for c in configs for s in c.scopes} - SCOPES
        if unknown:
            raise ValueError(f"unknown scope(s) in RAPPORT_API_KEYS: {sorted(unknown)}")
        self._clients = {_digest(c.key): Client(c.name, c.scopes) for c in configs}
        # Per key and per replica: a runaway client cannot flood the broker.
        self._buckets = {c.name: TokenBucket(rate_limit) for c in configs} if rate_limit else {}
        self.failures = FailedKeys()
        self.slack_failures = FailedKeys("Slack signatures")

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> ApiKeys:
        """Load configured keys; in development without keys, use the dev key.

        Outside development, keys must be set, and each at least 32 characters long.
        """
        limit = settings.rate_limit_per_s
        if settings.api_keys is None and settings.development:
            dev = KeyConfig(name=DEV_CLIENT, key=ensure_dev_key(settings), scopes=SCOPES)
            return cls([dev], limit)
        settings.check_secrets()
        assert settings.api_keys is not None
        configs = TypeAdapter(list[KeyConfig]).validate_json(settings.api_keys.get_secret_value())
        short = [c.name for c in configs if len(c.key) < MIN_SECRET_LENGTH]
        if short and not settings.development:
            raise UnsafeSettings(
                [f"RAPPORT_API_KEYS: key {name!r} is shorter than {MIN_SECRET_LENGTH} characters"
                 for name in short]
            )  # fmt: skip
        return cls(configs, limit)

    def authenticate(self, token: str) -> Client | None:
        return self._clients.get(_digest(token))

    def wait_needed(self, client: Client) -> float:
        """Seconds until ``client`` may send again (0: now)."""
        bucket = self._buckets.get(client.name)
        return bucket.take() if bucket is not None else 0.0


def ensure_dev_key(settings: Settings) -> str:
    """Return the development key, creating ``var/dev-api-key`` on first use."""
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


class Require(HTTPBearer):
    """Dependency: the calling client, which must hold ``scope``.

    A bearer scheme to OpenAPI (an HTTPBearer), and one dependency, not two (a function
    with an HTTPBearer beneath it).
    """

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        super().__init__(scheme_name="HTTPBearer", auto_error=False)
        self.scope = scope

    async def __call__(self, request: Request) -> Client:  # type: ignore[override]
        keys: ApiKeys = request.app.state.api_keys
        # Read as HTTPBearer reads it, without building its credentials model.
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        token = token if scheme.lower() == "bearer" else ""
        client = keys.authenticate(token) if token else None
        if client is None:
            if token:  # a wrong key, not a forgotten one
                keys.failures.refuse(request)
            raise HTTPException(
                401, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
            )
        if self.scope not in client.scopes:
            raise HTTPException(403, f"this API key lacks the {self.scope!r} scope")
        wait = keys.wait_needed(client)
        if wait:
            retry = str(max(1, math.ceil(wait)))
            raise HTTPException(429, "rate limit exceeded; retry later", {"Retry-After": retry})
        return client
