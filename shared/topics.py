"""Topic names (contract: ARCHITECTURE §3) and their explicit creation."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.settings import Settings

RECOGNITION = "rapport.recognition.v1"
SURVEY = "rapport.feedback.survey.v1"
DIRECTORY = "rapport.directory.people.v1"
# Survey rounds, key = survey id: opened, then closed, by an admin (feedback:admin).
ROUNDS = "rapport.feedback.rounds.v1"
SNAPSHOTS = "rapport.metrics.snapshots.v1"
# Digest deliveries per (manager, ISO week): claims and outcomes, so each is sent once.
DIGEST_LOG = "rapport.digest.deliveries.v1"
# Internal: recognitions fanned out per team, keyed by team id (aggregator stage 2 input).
TEAM_FACTS = "rapport.aggregator.team-facts.v1"
AGGREGATOR_APP_ID = "rapport-aggregator"
TEAM_DAYS_TABLE = "team-days"
TEAM_TRUST_TABLE = "team-trust"


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def all_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic Rapport uses, with its partition count."""
    n = settings.topic_partitions
    return [
        TopicSpec(RECOGNITION, n),
        TopicSpec(dlq(RECOGNITION), 1),
        TopicSpec(SURVEY, n),
        TopicSpec(dlq(SURVEY), 1),
        TopicSpec(TEAM_FACTS, n),
        TopicSpec(dlq(TEAM_FACTS), 1),
        # faust's table changelogs must match their source's partitions.
        TopicSpec(f"{AGGREGATOR_APP_ID}-{TEAM_DAYS_TABLE}-changelog", n, compacted=True),
        TopicSpec(f"{AGGREGATOR_APP_ID}-{TEAM_TRUST_TABLE}-changelog", n, compacted=True),
        TopicSpec(f"{AGGREGATOR_APP_ID}-__assignor-__leader", 1),
        TopicSpec(DIRECTORY, 4, compacted=True),
        TopicSpec(ROUNDS, 1, compacted=True),
        TopicSpec(SNAPSHOTS, 4, compacted=True),
        TopicSpec(DIGEST_LOG, 4, compacted=True),
    ]


async def create_topics(settings: Settings) -> list[str]:
    """Create missing topics; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                t.name,
                t.partitions,
                settings.topic_replication_factor,
                topic_configs={"cleanup.policy": "compact"} if t.compacted else {},
            )
            for t in all_topics(settings)
            if t.name not in existing
        ]
        # A concurrent creator may win the race; the topic is there either way.
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
        return [t.name for t in new]
    finally:
        await admin.close()
