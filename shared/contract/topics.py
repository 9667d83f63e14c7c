"""Topic names (contract: ARCHITECTURE §3), their settings by purpose, their creation and
their check against what a broker holds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from shared.infra.settings import Settings

RECOGNITION = "rapport.recognition.v1"
SURVEY = "rapport.feedback.survey.v1"
DIRECTORY = "rapport.directory.people.v1"
# Survey rounds, key = survey id: opened, then closed, by an admin (feedback:admin).
ROUNDS = "rapport.feedback.rounds.v1"
# Every person's data key, wrapped (key = subject id): erased, whatever is sealed about
# them can never be read again (shared.infra.subjects).
SUBJECT_KEYS = "rapport.privacy.subject-keys.v1"
# Each survey response's key (key = a random subject id): destroyed when its respondent
# is erased while the round is open, the answer is unreadable (shared.infra.subjects).
RESPONSE_KEYS = "rapport.feedback.response-keys.v1"
SNAPSHOTS = "rapport.metrics.snapshots.v1"
# Digest deliveries per (manager, ISO week): claims and outcomes, so each is sent once.
DIGEST_LOG = "rapport.digest.deliveries.v1"
# Whether each manager receives the digest (key = manager id), as they last said.
DIGEST_SUBSCRIPTIONS = "rapport.digest.subscriptions.v1"
# Internal: recognitions fanned out per team, keyed by team id (aggregator stage 2 input).
TEAM_FACTS = "rapport.aggregator.team-facts.v1"
# Internal: recognitions that were not on their event's partition, moved there.
EVENTS = "rapport.aggregator.events.v1"
# Which generation of the aggregator's topics is current (key "current"): `rapport replay`.
GENERATIONS = "rapport.aggregator.generations.v1"
AGGREGATOR_APP_ID = "rapport-aggregator"
TEAM_DAYS_TABLE = "team-days"
TEAM_TRUST_TABLE = "team-trust"
EVENT_IDS_TABLE = "event-ids"
DAY_MS = 24 * 3600 * 1000
DLQ_PARTITIONS = 1
SNAPSHOT_PARTITIONS = 4


def forgetting(settings: Settings, generation: Generation | None = None) -> list[str]:
    """The topics whose deleted records must physically go (each gets ticks)."""
    return [s.name for s in all_topics(settings, generation)
            if "max.compaction.lag.ms" in s.configs]  # fmt: skip


def dlq(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True)
class Generation:
    """One generation of what the aggregator derives from the source topics (recognitions,
    survey answers, the directory): its internal topics, its tables (their changelogs are
    named after its group) and the team snapshots. ``rapport replay`` builds the next one
    beside the current from the source topics, then switches every reader to it. The
    first keeps the names from before there were generations."""

    number: int = 1

    def _named(self, topic: str) -> str:
        return topic if self.number == 1 else f"{topic}.g{self.number}"

    @property
    def app_id(self) -> str:
        """The aggregator's consumer group, and its faust app id."""
        return AGGREGATOR_APP_ID if self.number == 1 else f"{AGGREGATOR_APP_ID}-g{self.number}"

    @property
    def team_facts(self) -> str:
        return self._named(TEAM_FACTS)

    @property
    def events(self) -> str:
        return self._named(EVENTS)

    @property
    def snapshots(self) -> str:
        return self._named(SNAPSHOTS)

    def changelog(self, table: str) -> str:
        return f"{self.app_id}-{table}-changelog"

    def of(self, topic: str) -> str:
        """``topic``, as the first generation names it, as this one does."""
        return self._names().get(topic, topic)

    def logical(self, topic: str) -> str:
        """``topic``, as this generation names it, as the first does."""
        return {v: k for k, v in self._names().items()}.get(topic, topic)

    def _names(self) -> dict[str, str]:
        return {TEAM_FACTS: self.team_facts, dlq(TEAM_FACTS): dlq(self.team_facts),
                EVENTS: self.events, SNAPSHOTS: self.snapshots}  # fmt: skip


def changelog(table: str) -> str:
    """A table's changelog in the first generation."""
    return Generation().changelog(table)


@dataclass(frozen=True)
class TopicSpec:
    """A topic as Rapport needs it: ``configs`` are the topic-level settings it must have."""

    name: str
    partitions: int
    configs: Mapping[str, str] = field(default_factory=dict)

    @property
    def compacted(self) -> bool:
        return self.configs.get("cleanup.policy") == "compact"


def min_insync_replicas(replication_factor: int) -> int:
    """Two copies acknowledged before a write counts, where a third can fail (RF 3+)."""
    return max(1, min(2, replication_factor - 1))


def all_topics(settings: Settings, generation: Generation | None = None) -> list[TopicSpec]:
    """Every topic Rapport uses, with its partition count and settings by purpose: the
    aggregator's of ``generation`` (by default the first).

    ``topic_partitions`` topics are those the aggregator computes a team's partition
    with: they must all have that many partitions.
    """
    g = generation or Generation()
    n = settings.topic_partitions
    days = settings.recognition_retention_days
    # The recognition log is the source of truth: every figure is rebuilt from it.
    log = {"cleanup.policy": "delete", "retention.ms": str(days * DAY_MS) if days else "-1"}
    # Raw survey answers (and the facts topic and DLQs they pass through): no longer
    # than the trust windows need.
    private = {"cleanup.policy": "delete",
               "retention.ms": str(settings.survey_retention_days * DAY_MS)}  # fmt: skip
    compact = {"cleanup.policy": "compact"}
    # What must be forgotten once deleted: a segment is compacted at the latest half of
    # ``forget_within_s`` after its first record, and the aggregator appends a tick to
    # every partition each quarter of it (a segment rolls only on an append), so a
    # deleted record is gone within three quarters of it plus a pass of Kafka's log
    # cleaner (every 15 s by default).
    # A compacted segment's old file goes 5 s after (Kafka's default: a minute).
    forget = {**compact, "max.compaction.lag.ms": str(settings.forget_within_s * 500),
              "file.delete.delay.ms": "5000"}  # fmt: skip
    return [
        TopicSpec(RECOGNITION, n, log),
        TopicSpec(dlq(RECOGNITION), DLQ_PARTITIONS, log),
        TopicSpec(SURVEY, n, private),
        TopicSpec(dlq(SURVEY), DLQ_PARTITIONS, private),
        TopicSpec(g.team_facts, n, private),
        TopicSpec(dlq(g.team_facts), DLQ_PARTITIONS, private),
        TopicSpec(g.events, n, private),
        # faust's table changelogs must match their source's partitions.
        TopicSpec(g.changelog(TEAM_DAYS_TABLE), n, compact),
        TopicSpec(g.changelog(TEAM_TRUST_TABLE), n, forget),
        TopicSpec(g.changelog(EVENT_IDS_TABLE), n, compact),
        TopicSpec(f"{g.app_id}-__assignor-__leader", 1),  # faust's own
        TopicSpec(GENERATIONS, 1, compact),
        TopicSpec(DIRECTORY, 4, forget),  # an erased person's entry replaces the one before
        TopicSpec(ROUNDS, 1, forget),
        TopicSpec(SUBJECT_KEYS, 1, forget),  # one log order: a person's first key is theirs
        # Kept as long as the answers they open, and one log order, as above.
        TopicSpec(RESPONSE_KEYS, 1, {**forget, **private, "cleanup.policy": "compact,delete"}),
        TopicSpec(g.snapshots, SNAPSHOT_PARTITIONS, compact),
        TopicSpec(DIGEST_LOG, 4, forget),  # an SMTP error quoting an erased address
        TopicSpec(DIGEST_SUBSCRIPTIONS, 1, compact),
    ]


def _configs(settings: Settings, spec: TopicSpec) -> dict[str, str]:
    isr = min_insync_replicas(settings.topic_replication_factor)
    return {**spec.configs, "min.insync.replicas": str(isr)}


async def create_topics(settings: Settings, generation: Generation | None = None) -> list[str]:
    """Create missing topics (the aggregator's of ``generation``, by default the first);
    return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        rf = settings.topic_replication_factor
        new = [
            NewTopic(t.name, t.partitions, rf, topic_configs=_configs(settings, t))
            for t in all_topics(settings, generation)
            if t.name not in existing
        ]
        # A concurrent creator may win the race; the topic is there either way.
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            await _until_led(admin, {t.name for t in new})
        return [t.name for t in new]
    finally:
        await admin.close()


async def _until_led(admin: AIOKafkaAdminClient, names: set[str], timeout_s: float = 30) -> None:
    """Wait until the broker's metadata has a leader for every partition of ``names``:
    a cluster answers CreateTopics before every broker knows the topics."""
    async with asyncio.timeout(timeout_s):
        while True:
            described = {t["topic"]: t["partitions"] for t in await admin.describe_topics()}
            if all(described.get(n) and all(p["leader"] >= 0 for p in described[n])
                   for n in names):  # fmt: skip
                return
            await asyncio.sleep(0.1)


class TopicsMismatch(RuntimeError):
    """Topics on the broker are not as Rapport needs them: each difference named."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n  - ".join(["topics differ from what Rapport needs:", *problems]))
        self.problems = problems


async def check_topics(
    settings: Settings, partitions_only: bool = False, generation: Generation | None = None
) -> list[str]:
    """Every difference between the broker's topics and :func:`all_topics`: missing
    topics, partition counts, and (on Apache Kafka, not on the embedded broker, which
    keeps no settings) replication factor and settings. Empty when all is as needed."""
    specs = all_topics(settings, generation)
    with_configs = not (partitions_only or settings.embedded)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        # Every topic: asking for missing ones by name would create them where the
        # broker auto-creates topics (with none of their settings).
        described = {t["topic"]: t["partitions"] for t in await admin.describe_topics()}
        found = [s for s in specs if s.name in described]
        configs = await _described_configs(admin, found) if with_configs else {}
    finally:
        await admin.close()
    problems = []
    for spec in specs:
        parts = described.get(spec.name)
        if not parts:
            problems.append(f"{spec.name}: missing (run `rapport topics`)")
            continue
        if len(parts) != spec.partitions:
            hint = ""
            if spec.partitions == settings.topic_partitions:  # the aggregator's count
                hint = " (RAPPORT_TOPIC_PARTITIONS; a team would be split across workers)"
            problems.append(f"{spec.name}: {len(parts)} partitions, needs {spec.partitions}{hint}")
        if not with_configs:
            continue
        rf = min(len(p["replicas"]) for p in parts)
        if rf != settings.topic_replication_factor:
            problems.append(f"{spec.name}: replication factor {rf}, needs "
                            f"{settings.topic_replication_factor}")  # fmt: skip
        for key, want in _configs(settings, spec).items():
            have = configs[spec.name].get(key)
            if have != want:
                problems.append(f"{spec.name}: {key}={have}, needs {want}")
    return problems


async def _described_configs(
    admin: AIOKafkaAdminClient, specs: list[TopicSpec]
) -> dict[str, dict[str, str]]:
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name) for s in specs]
    found: dict[str, dict[str, str]] = {}
    for response in await admin.describe_configs(resources):
        for r in response.to_object()["resources"]:
            entries = r["config_entries"]
            found[r["resource_name"]] = {e["config_names"]: e["config_value"] for e in entries}
    return found


async def check_partitions(settings: Settings, generation: Generation | None = None) -> None:
    """Raise :class:`TopicsMismatch` if a topic is missing or has another partition count
    than the aggregator computes teams with: a mismatch would split a team across
    workers (its facts on one partition, its table on another)."""
    problems = await check_topics(settings, partitions_only=True, generation=generation)
    if problems:
        raise TopicsMismatch(problems)
