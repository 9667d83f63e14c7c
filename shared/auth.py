"""API keys with scopes (ARCHITECTURE §4): 401 without a valid key, 403 with the wrong scope."""

from __future__ import annotations

import hashlib
import os
import secrets
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


class ApiKeys:
    def __init__(self, configs: list[KeyConfig]) -> None:
        unknown = {s for c in configs for s in c.scopes} - SCOPES
        if unknown:
            raise ValueError(f"unknown scope(s) in RAPPORT_API_KEYS: {sorted(unknown)}")
        self._clients = {_digest(c.key): Client(c.name, c.scopes) for c in configs}

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        """Load configured keys; in embedded mode without keys, use the dev key."""
        if settings.api_keys is not None:
            raw = settings.api_keys.get_secret_value()
            return cls(TypeAdapter(list[KeyConfig]).validate_json(raw))
        if not settings.embedded:
            raise RuntimeError("RAPPORT_API_KEYS must be set outside embedded mode")
        return cls([KeyConfig(name=DEV_CLIENT, key=ensure_dev_key(settings), scopes=SCOPES)])

    def authenticate(self, token: str) -> Client | None:
        return self._clients.get(_digest(token))


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
        return client

    return dependency
