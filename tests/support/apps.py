"""A bare service app (``shared.infra.web.create_app``, nothing behind it) for tests of
the HTTP layer itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.infra.web import create_app

JSON = {"Content-Type": "application/json"}


@asynccontextmanager
async def _nothing(app: FastAPI) -> AsyncIterator[None]:
    yield


async def _ready(app: FastAPI) -> bool:
    return True


def bare_app(title: str = "t") -> FastAPI:
    """An app with Rapport's error shapes, metrics and probes, and no routes of its own."""
    return create_app(title, _nothing, _ready)
