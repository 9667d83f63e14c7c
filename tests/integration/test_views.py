"""A service starts while a long topic is still being read, and says when it has caught up."""

from __future__ import annotations

import asyncio

from shared.infra.settings import Settings
from shared.readmodels.directory import DirectoryView
from tests.support.kafka import put_people
from tests.support.people import person

PEOPLE = [person(f"u{i}", "t") for i in range(5000)]


def test_a_view_started_without_waiting_catches_up_and_sync_says_when(settings: Settings) -> None:
    asyncio.run(put_people(settings, PEOPLE))

    async def follow() -> None:
        view = DirectoryView(settings)
        await view.start(wait=False)  # returns before reading anything
        try:
            assert view.get("u0") is None
            await view.sync()  # what /readyz and a digest run wait for
            assert view.get("u4999") is not None and len(view.members("t")) == 5000
        finally:
            await view.stop()

    asyncio.run(follow())
