"""`rapport topics` on a three-node Apache Kafka: every topic with its settings by
purpose, differences reported, and an aggregator that refuses a partition mismatch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.contract import topics
from shared.devtools.apache_kafka import KafkaCluster
from tests.support import ROOT

DAY_MS = 86_400_000
WEEK = str(7 * DAY_MS)
# What a reader of ARCHITECTURE §2 expects of each topic: (cleanup.policy, retention.ms),
# None where Kafka's default applies.
EXPECTED = {
    topics.RECOGNITION: ("delete", "-1"),  # the source of truth, kept for replay
    topics.dlq(topics.RECOGNITION): ("delete", "-1"),
    topics.SURVEY: ("delete", WEEK),  # raw answers: RAPPORT_SURVEY_RETENTION_DAYS=7 below
    topics.dlq(topics.SURVEY): ("delete", WEEK),
    topics.TEAM_FACTS: ("delete", WEEK),  # survey answers pass through it
    topics.dlq(topics.TEAM_FACTS): ("delete", WEEK),
    topics.EVENTS: ("delete", WEEK),
    "rapport-aggregator-team-days-changelog": ("compact", None),
    "rapport-aggregator-team-trust-changelog": ("compact", None),
    "rapport-aggregator-event-ids-changelog": ("compact", None),
    "rapport-aggregator-__assignor-__leader": ("delete", None),  # faust's own
    topics.GENERATIONS: ("compact", None),
    topics.DIRECTORY: ("compact", None),
    topics.ROUNDS: ("compact", None),
    topics.SUBJECT_KEYS: ("compact", None),
    topics.RESPONSE_KEYS: ("compact,delete", WEEK),  # as long as the answers they open
    topics.SNAPSHOTS: ("compact", None),
    topics.DIGEST_LOG: ("compact", None),
    topics.DIGEST_SUBSCRIPTIONS: ("compact", None),
}


def rapport(cluster: KafkaCluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    values = {"RAPPORT_KAFKA_BOOTSTRAP_SERVERS": cluster.bootstrap_servers,
              "RAPPORT_TOPIC_REPLICATION_FACTOR": "3", "RAPPORT_TOPIC_PARTITIONS": "4",
              "RAPPORT_SURVEY_RETENTION_DAYS": "7", "RAPPORT_AGGREGATOR_METRICS_PORT": "0",
              **env}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env={**os.environ, **values},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def describe(bootstrap_servers: str) -> tuple[dict[str, Any], dict[str, dict[str, str]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        found = {t["topic"]: t["partitions"] for t in await admin.describe_topics()}
        names = [t for t in found if t.startswith("rapport")]
        resources = [ConfigResource(ConfigResourceType.TOPIC, t) for t in names]
        configs = {
            r["resource_name"]: {e["config_names"]: e["config_value"] for e in r["config_entries"]}
            for response in await admin.describe_configs(resources)
            for r in response.to_object()["resources"]
        }
        return found, configs
    finally:
        await admin.close()


def test_topics_get_settings_by_purpose_and_a_partition_mismatch_stops_the_aggregator(
    kafka_cluster: KafkaCluster,
) -> None:
    made = rapport(kafka_cluster, "topics")
    assert made.returncode == 0, made.stderr
    assert f"created {len(EXPECTED)} topic(s)" in made.stdout
    assert "every topic as needed" in made.stdout

    partitions, configs = asyncio.run(describe(kafka_cluster.bootstrap_servers))
    assert set(EXPECTED) <= set(partitions)
    for name, (policy, retention) in EXPECTED.items():
        assert {len(p["replicas"]) for p in partitions[name]} == {3}, name
        assert configs[name]["min.insync.replicas"] == "2", name
        assert configs[name]["cleanup.policy"] == policy, name
        if retention is not None:
            assert configs[name]["retention.ms"] == retention, name
    assert len(partitions[topics.TEAM_FACTS]) == len(partitions[topics.SURVEY]) == 4
    # What must be forgotten is compacted within half of RAPPORT_FORGET_WITHIN_S (an hour).
    forgetting = {n for n, c in configs.items() if c["max.compaction.lag.ms"] == "1800000"}
    assert forgetting == {topics.ROUNDS, topics.SUBJECT_KEYS, topics.RESPONSE_KEYS,
                          topics.DIRECTORY, topics.DIGEST_LOG,
                          "rapport-aggregator-team-trust-changelog"}  # fmt: skip

    again = rapport(kafka_cluster, "topics")  # nothing to create, nothing differs
    assert again.returncode == 0 and "created 0 topic(s)" in again.stdout, again.stderr

    # Settings that no longer match the topics: each difference named, nothing changed.
    other = {"RAPPORT_TOPIC_PARTITIONS": "6", "RAPPORT_SURVEY_RETENTION_DAYS": "14"}
    differs = rapport(kafka_cluster, "topics", **other)
    assert differs.returncode == 1
    assert f"differs: {topics.TEAM_FACTS}: 4 partitions, needs 6" in differs.stderr
    assert f"differs: {topics.SURVEY}: retention.ms={WEEK}, needs {14 * DAY_MS}" in differs.stderr
    assert f"{topics.RECOGNITION}: retention" not in differs.stderr
    partitions_now, configs_now = asyncio.run(describe(kafka_cluster.bootstrap_servers))
    assert configs_now == configs
    assert {t: len(p) for t, p in partitions_now.items()} == {
        t: len(p) for t, p in partitions.items()
    }

    # The aggregator counting with 6 partitions would split teams: it refuses to start.
    refused = rapport(kafka_cluster, "aggregator", RAPPORT_TOPIC_PARTITIONS="6",
                      RAPPORT_MASTER_KEY="ab" * 32)  # production: its secret given  # fmt: skip
    assert refused.returncode == 2
    assert f"{topics.TEAM_FACTS}: 4 partitions, needs 6 (RAPPORT_TOPIC_PARTITIONS" in (
        refused.stderr
    )
    assert "Worker" not in refused.stderr + refused.stdout  # faust never started
