"""What the writing services (recognition, feedback) share: app state and dependencies.

Dependencies are ``async def``: FastAPI runs plain ``def`` ones in a thread pool, a
thread hop per request for a dictionary look-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from fastapi import APIRouter, FastAPI, Header, Request

from shared.infra.auth import ApiKeys
from shared.infra.fastpath import serve_first
from shared.infra.kafka import Publisher
from shared.infra.settings import ApiSettings
from shared.infra.subjects import SubjectKeys
from shared.infra.views import TopicView
from shared.infra.web import create_app
from shared.readmodels.directory import DirectoryView

S = TypeVar("S", bound=ApiSettings)


@dataclass(frozen=True, slots=True)
class Parts(Generic[S]):
    """What a write endpoint works with, as one dependency (``Parts[ItsServiceSettings]``,
    through ``get_parts``)."""

    settings: S
    directory: DirectoryView  # who may give, receive and answer
    publisher: Publisher
    subjects: SubjectKeys  # everyone's data key: what is sealed about them, erased with it


async def get_parts(request: Request) -> Parts[Any]:
    parts: Parts[Any] = request.app.state.parts
    return parts


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]


def create_writer_app(
    title: str,
    settings: S,
    routers: Sequence[APIRouter],
    views: Mapping[str, type[TopicView]] | None = None,
    fast: APIRouter | None = None,
) -> FastAPI:
    """A service that checks requests against the directory and publishes events.

    ``views`` are more topic views, each kept in ``app.state`` under its name; ``fast``
    a router of direct routes, served ahead of the others (``shared.infra.fastpath``). Refuses
    (``UnsafeSettings``) to be built without its keys outside development.
    """
    api_keys = ApiKeys.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api_keys = api_keys
        publisher, directory = Publisher(settings), DirectoryView(settings)
        subjects = SubjectKeys(settings)
        app.state.parts = Parts(settings, directory, publisher, subjects)
        followed: list[TopicView] = [directory, subjects]
        for name, kind in (views or {}).items():
            followed.append(kind(settings))
            setattr(app.state, name, followed[-1])
        await publisher.start()
        for view in followed:
            await view.start()
        try:
            yield
        finally:
            for view in reversed(followed):
                await view.stop()
            await publisher.stop()

    async def ready(app: FastAPI) -> bool:
        parts: Parts[S] = app.state.parts
        return await parts.publisher.ping()

    app = create_app(title, lifespan, ready)
    if fast is not None:
        serve_first(app, fast)
    for router in routers:
        app.include_router(router)
    return app
