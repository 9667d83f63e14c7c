"""The latest snapshot of every team (compacted topic, key = team id), of the current
generation of the aggregator's topics (``shared.readmodels.generations``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from shared.contract import topics
from shared.contract.events import TeamSnapshot
from shared.infra.errors import BrokerUnavailable, NotReady
from shared.infra.settings import Settings
from shared.infra.views import TopicView, read_event
from shared.readmodels.generations import GenerationView

log = logging.getLogger(__name__)
FOLLOW_S = 1.0  # how often a reader looks for a new generation


class Snapshots(Protocol):
    def get(self, team_id: str) -> TeamSnapshot | None: ...

    def teams(self) -> list[str]: ...


class SnapshotView(TopicView):
    """One generation's snapshots (by default the first's)."""

    def __init__(self, settings: Settings, generation: topics.Generation | None = None) -> None:
        super().__init__(settings)
        self.generation = generation or topics.Generation()
        self.topic = self.generation.snapshots
        self._latest: dict[str, TeamSnapshot] = {}

    def get(self, team_id: str) -> TeamSnapshot | None:
        return self._latest.get(team_id)

    def teams(self) -> list[str]:
        return sorted(self._latest)

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if (snapshot := read_event(TeamSnapshot, key, headers, value)) is not None:
            self._latest[snapshot.team_id] = snapshot


class CurrentSnapshots:
    """The snapshots of the current generation. When another becomes current, its
    snapshots are read in full beside these, then take their place: a reader never sees
    a generation half read."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._generations = GenerationView(settings)
        self._view = SnapshotView(settings)
        self._follow: asyncio.Task[None] | None = None

    @property
    def generation(self) -> topics.Generation:
        return self._view.generation

    async def start(self, wait: bool = True) -> None:
        await self._generations.start(wait=False)
        # The current generation if the broker says so at once; else the first, until
        # the generations topic is read (then the follower below switches).
        with contextlib.suppress(NotReady, BrokerUnavailable):
            await self._generations.sync()
        self._view = SnapshotView(self._settings, self._generations.current)
        await self._view.start(wait)
        self._follow = asyncio.create_task(self._following(), name="snapshots-generation")

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        await self._view.stop()
        await self._generations.stop()

    async def sync(self) -> None:
        await self._view.sync()

    def get(self, team_id: str) -> TeamSnapshot | None:
        return self._view.get(team_id)

    def teams(self) -> list[str]:
        return self._view.teams()

    async def _following(self) -> None:
        while True:
            await asyncio.sleep(FOLLOW_S)
            wanted = self._generations.current
            if wanted == self._view.generation:
                continue
            new = SnapshotView(self._settings, wanted)
            await new.start(wait=False)
            while True:
                try:
                    await new.sync()
                    break
                except (NotReady, BrokerUnavailable):
                    await asyncio.sleep(FOLLOW_S)
            old, self._view = self._view, new
            await old.stop()
            log.info("figures now from generation %d (%s)", wanted.number, wanted.snapshots)
