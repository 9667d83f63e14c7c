"""Which generation of the aggregator's topics is current (``topics.Generation``): the
generations topic, key "current"; none there yet is the first. ``rapport replay`` writes
it once the next generation has caught up; readers of figures switch to it, and a worker
of an older one stops (to be started again in the current one)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import CURRENT_GENERATION, CurrentGeneration
from shared.infra.kafka import Record
from shared.infra.settings import Settings
from shared.infra.views import TopicView, read_event

CURRENT = "current"
READ_S = 30.0  # one record a replay: read at once, unless the broker is slow to answer


class GenerationView(TopicView):
    topic = topics.GENERATIONS

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.current = topics.Generation()

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if key != CURRENT.encode():
            return
        if (found := read_event(CurrentGeneration, key, headers, value)) is not None:
            self.current = topics.Generation(found.generation)


async def current(settings: Settings) -> topics.Generation:
    """The current generation, as the broker has it now."""
    view = GenerationView(settings)
    await view.start(wait=False)
    try:
        await view.sync(timeout_s=READ_S)
        return view.current
    finally:
        await view.stop()


def switched_to(generation: topics.Generation) -> Record:
    """The record that makes ``generation`` the current one."""
    data = CurrentGeneration(generation=generation.number).model_dump()
    ce = CloudEvent(
        uuid.uuid4().hex, "/rapport/replay", CURRENT_GENERATION, datetime.now(UTC), data
    )
    return Record.of(topics.GENERATIONS, CURRENT, ce)
