"""Stage three: team facts and survey events into the team tables.

rapport.aggregator.team-facts.v1 --> tables team-days (key: team/day, and team/day#n
for sealed fact ids) and team-trust (keys: see surveys.py)

Every table write goes to the changelog on the partition of the record that caused it,
so stream, table and changelog stay co-partitioned; the teams changed are marked for
the next snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable

from faust.types import Message

from shared.contract import topics
from shared.contract.codec import dlq_reason

from . import service
from .batches import TURN
from .output import DLQ_PARTITION, Output, Sent
from .records import forwarded_feedback, is_close, is_survey
from .surveys import Surveys
from .transport import Store

log = logging.getLogger(__name__)
SEEN_CACHE_BUCKETS = 4096
FIT_STEPS = 8  # parts a bucket over the record bound tries its facts in
FACTS_DLQ = topics.dlq(topics.TEAM_FACTS)
SURVEY_DLQ = topics.dlq(topics.SURVEY)


class Aggregate:
    def __init__(
        self,
        out: Output,
        days: Store,
        surveys: Surveys,
        trust: Store,
        partition_of: Callable[[str], int],
        changed: Callable[[str, str | None], None],
        keys_read: Callable[[], Awaitable[None]],
    ) -> None:
        self.out = out
        self.days = days  # the team-days table
        self.surveys = surveys
        self.trust = trust  # the team-trust table, kept by surveys
        self.partition_of = partition_of
        self.changed = changed  # a team's tables changed (its day bucket, if one)
        self.keys_read = keys_read  # every response key written until now is read
        # Per bucket key: service.seen_ids, for the buckets used last (old days rarely are).
        self.seen_cache: OrderedDict[str, set[int]] = OrderedDict()

    def recovered(self) -> None:
        """After a rebalance: the tables may have changed under the caches."""
        self.seen_cache.clear()
        self.surveys.rebuild()

    async def batch(self, messages: list[Message]) -> tuple[list[Sent], int]:
        grouped: dict[tuple[str, int], list[service.TeamFact]] = defaultdict(list)
        sent: list[Sent] = []
        handled = 0
        if any(is_close(m) for m in messages):  # its answers are opened: their keys are
            await self.keys_read()  # on the keys topic before the answers were published
        for message in messages:
            if is_survey(message):
                sent += self.apply_feedback(message)
                handled += 1
                continue
            try:
                team_facts = service.loads(message.value or b"[]")  # None: no facts
            except (ValueError, TypeError) as exc:  # not written by a worker: never a crash loop
                reason = f"unreadable team facts: {exc}"
                sent.append(self.out.to_dlq(message, reason, FACTS_DLQ))
                continue
            for f in team_facts:
                grouped[(service.table_key(f.team_id, f.day), message.partition)].append(f)
                handled += 1
        for i, ((key, partition), team_facts) in enumerate(grouped.items(), 1):
            sent += self.apply_facts(key, partition, team_facts)
            if i % TURN == 0:
                await asyncio.sleep(0)
        return sent, handled

    def apply_facts(
        self, key: str, partition: int, team_facts: list[service.TeamFact]
    ) -> list[Sent]:
        sent = []
        old, seen = self.days.get(key), self.seen_of(key)
        fresh = len(old["fresh"]) if old is not None else 0
        bucket = service.apply(old, team_facts, seen)
        # Serialized once, to be measured and written; again only after a change.
        raw = service.to_json(bucket) if bucket is not None else None
        if bucket is not None and raw is not None and len(raw) > service.MAX_RECORD_BYTES:
            bucket, parked = self.fit(key, old, (bucket, fresh), team_facts, seen)
            sent += self.park(key, parked)
            raw = None
        if bucket is not None:
            sealed = service.seal(bucket)
            if sealed is not None:
                raw = None
                # First: a partition keeps its order, so the chunk is on the log
                # before the bucket that counts it (see service.seal).
                chunk = service.chunk_key(key, sealed[0])
                self.days[chunk] = sealed[1]
                sent.append(self.out.changelog(self.days, chunk, sealed[1], partition))
            self.days[key] = bucket
            sent.append(self.out.changelog(self.days, key, bucket, partition, raw))
        # Marked even for duplicates: a crash may have come before the snapshot of the
        # first delivery went out.
        self.changed(*service.split_key(key))
        return sent

    def fit(
        self,
        key: str,
        old: service.Bucket | None,
        applied: tuple[service.Bucket, int],
        team_facts: list[service.TeamFact],
        seen: set[int],
    ) -> tuple[service.Bucket | None, list[service.TeamFact]]:
        """A bucket over the record bound with ``team_facts``: undo them, absorb as many as
        keep it under the bound (in order, an eighth at a time), and return it (``None``:
        unchanged) with the facts that did not fit. Rare: an all-hands day of a large
        team. Counting such a day whole is for a layout that splits a bucket."""
        over, fresh_before = applied
        service.unapply(over, team_facts, seen, fresh_before)
        bucket, kept = old, 0
        step = -(-len(team_facts) // FIT_STEPS)
        for i in range(0, len(team_facts), step):
            part = team_facts[i : i + step]
            fresh = len(bucket["fresh"]) if bucket is not None else 0
            trial = service.apply(bucket, part, seen)
            if trial is not None and len(service.to_json(trial)) > service.MAX_RECORD_BYTES:
                service.unapply(trial, part, seen, fresh)
                break
            bucket, kept = trial or bucket, i + len(part)
        parked = [f for f in team_facts[kept:] if f.id not in seen]
        log.error("team-days bucket %s would be over %d bytes: %d facts parked in %s",
                  key, service.MAX_RECORD_BYTES, len(parked), FACTS_DLQ)  # fmt: skip
        return (bucket if kept else None), parked

    def park(self, key: str, team_facts: list[service.TeamFact]) -> list[Sent]:
        """Facts that cannot be counted, to the facts DLQ with the reason, in records under
        the bound: they are kept, counted in the DLQ metric, and every other bucket and
        partition carries on."""
        reason = dlq_reason(f"team-days bucket {key} would pass the "
                            f"{service.MAX_RECORD_BYTES}-byte record bound")  # fmt: skip
        sent: list[Sent] = []
        for raw in service.dumps_within(team_facts):
            self.out.metrics.dlq.labels(topics.TEAM_FACTS).inc()
            sent.append(self.out.write(FACTS_DLQ, DLQ_PARTITION, key.encode(), raw, [reason]))
        return sent

    def apply_feedback(self, message: Message) -> list[Sent]:
        try:
            ce, item = forwarded_feedback(message)
            updates, moved = self.surveys.changes(ce, item, message.partition, self.partition_of)
        except Exception as exc:  # one record, whatever is wrong with it: never a crash loop
            log.warning("survey record at %s/%d not counted: %r", message.tp, message.offset,
                        exc)  # fmt: skip
            return [self.out.to_dlq(message, f"{type(exc).__name__}: {exc}", SURVEY_DLQ)]
        self.surveys.commit(updates)
        sent = []
        for key, value in updates:
            sent.append(self.out.changelog(self.trust, key, value, message.partition))
        for team_id in moved:
            self.changed(team_id, None)
        return sent

    def seen_of(self, key: str) -> set[int]:
        if key in self.seen_cache:
            self.seen_cache.move_to_end(key)
            return self.seen_cache[key]
        chunk = lambda n: self.days[service.chunk_key(key, n)]  # noqa: E731
        seen = self.seen_cache[key] = service.seen_ids(self.days.get(key), chunk)
        if len(self.seen_cache) > SEEN_CACHE_BUCKETS:
            self.seen_cache.popitem(last=False)
        return seen
