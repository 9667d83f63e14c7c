"""The latest snapshot of every team (compacted topic, key = team id)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import ValidationError

from shared import topics
from shared.codec import CodecError, decode
from shared.events import TeamSnapshot
from shared.settings import Settings
from shared.views import TopicView

log = logging.getLogger(__name__)


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
        if key is None or value is None:
            return
        try:
            snapshot = TeamSnapshot.model_validate(decode(headers, value).data)
        except (CodecError, ValidationError) as exc:
            log.warning("invalid snapshot %r ignored: %s", key, exc)
            return
        self._latest[snapshot.team_id] = snapshot
