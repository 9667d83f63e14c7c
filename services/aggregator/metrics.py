"""Operational metrics of an aggregator worker, served on their own port (faust's web is off)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


class AggregatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "rapport_aggregator_events",
            "Records processed, by stage (fan_out: recognitions, forward: survey events, "
            "aggregate: team facts).",
            ["stage"],
            registry=registry,
        )
        self.dlq = Counter(
            "rapport_aggregator_dlq",
            "Records sent to a dead-letter topic, by the topic they came from.",
            ["topic"],
            registry=registry,
        )
        self.consumer_lag = Gauge(
            "rapport_aggregator_consumer_lag",
            "Fetched lag: records on this worker's partitions after the last one its batches "
            "processed, up to the log end its last fetch saw, by stage. How far processing "
            "is behind fetching; what the group has committed is "
            "rapport_aggregator_committed_lag.",
            ["stage"],
            registry=registry,
        )
        self.committed_lag = Gauge(
            "rapport_aggregator_committed_lag",
            "Committed lag: records on this worker's partitions between the group's "
            "committed offset and the log end, by stage, asked of the broker every 5 s: "
            "what kafka-consumer-groups and outside lag monitors show, and what a restart "
            "reads again. Alerts watch this one.",
            ["stage"],
            registry=registry,
        )
        self.trimmed = Counter(
            "rapport_aggregator_trimmed_snapshots",
            "Team snapshots that would have been over the broker's record limit, sent "
            "without their oldest comment blocks and days.",
            registry=registry,
        )
        self.duplicates = Counter(
            "rapport_aggregator_duplicate_events",
            "Recognitions not counted: another record of the same (source, id) counted "
            "within the dedupe horizon (RAPPORT_DEDUPE_HORIZON_DAYS).",
            registry=registry,
        )
        self.partitions = Gauge(
            "rapport_aggregator_partitions",
            "Team-facts partitions this worker owns, set once their tables are recovered.",
            registry=registry,
        )
        self.event_time_lag = Histogram(
            "rapport_aggregator_event_time_lag_seconds",
            "Seconds from a recognition's event time to its processing (backdated "
            "recognitions land in the top buckets).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
