"""What the writing services (recognition, feedback) share: app state and dependencies.

Dependencies are ``async def``: FastAPI runs plain ``def`` ones in a thread pool, a
thread hop per request for a dictionary look-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Request

from shared.auth import ApiKeys
from shared.directory import DirectoryView
from shared.kafka import Publisher
from shared.settings import Settings
from shared.views import TopicView
from shared.web import create_app


async def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


async def get_directory(request: Request) -> DirectoryView:
    directory: DirectoryView = request.app.state.directory
    return directory


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


PublisherDep = Annotated[Publisher, Depends(get_publisher)]
DirectoryDep = Annotated[DirectoryView, Depends(get_directory)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)]


def create_writer_app(
    title: str,
    settings: Settings,
    router: APIRouter,
    views: Mapping[str, type[TopicView]] | None = None,
) -> FastAPI:
    """A service that checks requests against the directory and publishes events.

    ``views`` are more topic views, each kept in ``app.state`` under its name. Refuses
    (``UnsafeSettings``) to be built without its keys outside development.
    """
    api_keys = ApiKeys.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.api_keys = api_keys
        app.state.publisher = publisher = Publisher(settings)
        app.state.directory = directory = DirectoryView(settings)
        followed: list[TopicView] = [directory]
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
        publisher: Publisher = app.state.publisher
        return await publisher.ping()

    app = create_app(title, lifespan, ready)
    app.include_router(router)
    return app
