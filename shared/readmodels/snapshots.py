"""The latest snapshot of every team (compacted topic, key = team id)."""

from __future__ import annotations

from collections.abc import Sequence

from shared.contract import topics
from shared.contract.events import TeamSnapshot
from shared.infra.settings import Settings
from shared.infra.views import TopicView, read_event


class SnapshotView(TopicView):
    topic = topics.SNAPSHOTS

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
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
