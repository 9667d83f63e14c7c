"""Pure aggregation logic; the stages in ``app.py`` only move data in and out.

Two steps, so that each aggregate has one owner:
1. ``fan_out``: a recognition becomes per-team facts (one per recipient, one for the
   giver), keyed by team, using the directory as it is when the event is processed.
2. ``apply``: facts update one (team, UTC day) bucket. The bucket keeps the ids of the
   facts it has absorbed, so a redelivered fact changes nothing; its latest ids travel
   in the bucket's own changelog write, with the aggregate they protect. Every
   ``CHUNK`` ids, ``seal`` moves them out into a chunk, written once to the same table
   under its own key, so a bucket's changelog writes stay small however busy its day.

In memory, ids are kept in ``array('q')`` (``Ids``): 8 bytes an id, where a list holds a
pointer to a 48-byte int. With 1,000,000 events of 5,000 teams that was 80 MB of a
worker's memory. On the changelog they are JSON arrays, as before (``to_json``,
``compact``).
"""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import orjson

from shared.contract.codec import format_time
from shared.contract.events import DayActivity, RecognitionGiven, TeamTrust

SNAPSHOT_DAYS = 63  # 8 ISO weeks of history for the digest's trend, plus today
# Every record a worker writes itself stays under this (the broker's default limit is
# 1 MB): a record the broker refuses would stop the worker on every try. The team
# snapshot alone has a bound of its own (``publish.MAX_SNAPSHOT_BYTES``).
MAX_RECORD_BYTES = 256 * 1024
CHUNK = 512
Bucket = dict[str, Any]
Ids = array  # of "q": signed 64-bit, as every id here is (a 63-bit hash)
# A bucket keeps its links and hours flat, "giver recipient" and "giver HH" (no id has a
# space): a dict per giver and bucket held half a worker's memory with 1,000,000 events
# of 5,000 teams. The snapshot nests them again (``DayActivity.links``).
PAIR = " "


class Placed(Protocol):
    """What fan-out needs to know of a person (a directory entry or a roster's ``Placement``)."""

    @property
    def id(self) -> str: ...
    @property
    def team_id(self) -> str: ...
    @property
    def manager_id(self) -> str | None: ...


class Unresolvable(ValueError):
    """A recognition names someone the directory does not know."""


@dataclass(slots=True)  # not frozen: that makes each one three times as slow to create
class TeamFact:
    id: int  # 63-bit hash of (source, event id, role, person): the dedupe key
    team_id: str
    day: str  # ISO date, UTC, of occurred_at
    kind: Literal["received", "given"]
    person_id: str
    values: Sequence[str] = ()
    cross_team: bool = False
    direction: Literal["upward", "downward", "peer"] = "peer"
    recipients: Sequence[str] = ()  # a given fact: whom (the links of the connection figures)
    hour: int = 0  # a given fact: the UTC hour of occurred_at (bursts)


def dumps(facts: Iterable[TeamFact]) -> bytes:
    """One record for many facts: a JSON array of arrays, fields in declaration order."""
    return orjson.dumps(
        [[f.id, f.team_id, f.day, f.kind, f.person_id, f.values, f.cross_team, f.direction,
          f.recipients, f.hour] for f in facts]
    )  # fmt: skip


def dumps_within(facts: Sequence[TeamFact], limit: int = MAX_RECORD_BYTES) -> list[bytes]:
    """``facts`` as records of at most ``limit`` bytes each: one, or halves until each
    fits (a fact alone is a few kB at most: 20 recipients of 64-character ids)."""
    raw = dumps(facts)
    if len(raw) <= limit or len(facts) == 1:
        return [raw]
    half = len(facts) // 2
    return dumps_within(facts[:half], limit) + dumps_within(facts[half:], limit)


def loads(raw: bytes) -> list[TeamFact]:
    return [TeamFact(*f) for f in orjson.loads(raw)]


def fact_id(*parts: str) -> int:
    # An int: half the memory of its hex string, and within JSON's signed 64 bits.
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 1


def fan_out(
    source: str, event_id: str, r: RecognitionGiven, lookup: Callable[[str], Placed | None]
) -> list[TeamFact]:
    """Split one recognition into facts for the teams involved."""
    giver = lookup(r.giver_id)
    if giver is None:
        raise Unresolvable(f"unknown giver {r.giver_id!r}")
    at = r.occurred_at.astimezone(UTC)
    day = at.date().isoformat()
    given = TeamFact(fact_id(source, event_id, "g"), giver.team_id, day, "given", giver.id,
                     recipients=r.recipient_ids, hour=at.hour)  # fmt: skip
    facts = [given]
    for rid in r.recipient_ids:
        recipient = lookup(rid)
        if recipient is None:
            raise Unresolvable(f"unknown recipient {rid!r}")
        if recipient.manager_id == giver.id:
            direction: Literal["upward", "downward", "peer"] = "downward"
        elif giver.manager_id == recipient.id:
            direction = "upward"
        else:
            direction = "peer"
        facts.append(
            TeamFact(
                fact_id(source, event_id, "r", rid),
                recipient.team_id,
                day,
                "received",
                rid,
                r.values,
                recipient.team_id != giver.team_id,
                direction,
            )
        )
    return facts


EMPTY_ACTIVITY = DayActivity().model_dump()


def ids(values: Iterable[int] = ()) -> Ids[int]:
    return array("q", values)


def compact(value: Any) -> Any:
    """A value of the team-days or event-ids table as read from its changelog, with its
    ids in an ``Ids``: a sealed chunk (a JSON array), or an entry's ``fresh`` ids."""
    if isinstance(value, list):
        return ids(value)
    if isinstance(value, dict) and isinstance(value.get("fresh"), list):
        return {**value, "fresh": ids(value["fresh"])}
    return value


def to_json(value: Any) -> bytes:
    """A table value as its changelog holds it: ``Ids`` as JSON arrays."""
    return orjson.dumps(value, default=_listed)


def _listed(value: Any) -> list[Any]:
    if isinstance(value, array):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def new_bucket() -> Bucket:
    activity = {k: v.copy() if isinstance(v, dict) else v for k, v in EMPTY_ACTIVITY.items()}
    return {"activity": activity, "fresh": ids(), "sealed": 0}


def seen_ids(bucket: Bucket | None, chunk: Callable[[int], Iterable[int]]) -> set[int]:
    """Every fact id ``bucket`` has absorbed: its sealed chunks (``chunk(i)``) and the rest."""
    if bucket is None:
        return set()
    return {i for n in range(bucket["sealed"]) for i in chunk(n)} | set(bucket["fresh"])


def apply(bucket: Bucket | None, facts: Iterable[TeamFact], seen: set[int]) -> Bucket | None:
    """Return the bucket with ``facts`` absorbed, or ``None`` if all were seen before.

    ``seen`` is :func:`seen_ids` of the bucket, kept up to date here.
    """
    result = bucket or new_bucket()
    changed = False
    a = result["activity"]
    for f in facts:
        if f.id in seen:
            continue
        seen.add(f.id)
        result["fresh"].append(f.id)
        changed = True
        person = sys.intern(f.person_id)  # one string per person, however many buckets
        if f.kind == "given":
            a["given"][person] = a["given"].get(person, 0) + 1
            links = a["links"]
            for r in f.recipients:
                key = f"{person}{PAIR}{r}"
                links[key] = links.get(key, 0) + 1
            key = f"{person}{PAIR}{f.hour:02d}"
            a["hours"][key] = a["hours"].get(key, 0) + 1
            continue
        a["received"][person] = a["received"].get(person, 0) + 1
        for v in f.values:
            a["values"][v] = a["values"].get(v, 0) + 1
        a["cross_team"] += f.cross_team
        if f.direction != "peer":
            a[f.direction] += 1
    return result if changed else None


def unapply(bucket: Bucket, facts: Iterable[TeamFact], seen: set[int], fresh: int) -> None:
    """Undo :func:`apply` of ``facts`` (those it absorbed: the ids it appended to the
    bucket's ``fresh`` after its first ``fresh`` ids), so the bucket is as before."""
    absorbed = set(bucket["fresh"][fresh:])
    del bucket["fresh"][fresh:]
    seen.difference_update(absorbed)
    a = bucket["activity"]
    for f in facts:
        if f.id not in absorbed:
            continue
        absorbed.discard(f.id)  # a fact twice in ``facts`` was absorbed once
        if f.kind == "given":
            _less(a["given"], f.person_id)
            for r in f.recipients:
                _less(a["links"], f"{f.person_id}{PAIR}{r}")
            _less(a["hours"], f"{f.person_id}{PAIR}{f.hour:02d}")
            continue
        _less(a["received"], f.person_id)
        for v in f.values:
            _less(a["values"], v)
        a["cross_team"] -= f.cross_team
        if f.direction != "peer":
            a[f.direction] -= 1


def _less(counts: dict[str, int], key: str) -> None:
    counts[key] -= 1
    if not counts[key]:
        del counts[key]


def seal(bucket: Bucket) -> tuple[int, Ids[int]] | None:
    """Take the bucket's fresh ids out as chunk number n once there are ``CHUNK`` of them.

    The chunk must be on the log before the bucket that counts it: a bucket only ever
    reads chunks below its ``sealed``, so a chunk written before a crash that lost the
    bucket's write is ignored, then written again.
    """
    if len(bucket["fresh"]) < CHUNK:
        return None
    chunk, bucket["fresh"] = bucket["fresh"], ids()
    bucket["sealed"] += 1
    return bucket["sealed"] - 1, chunk


def build_snapshot(
    team_id: str, buckets: Mapping[str, Bucket], trust: TeamTrust, now: datetime
) -> dict[str, Any]:
    """The data of a team snapshot event (shape: ``TeamSnapshot``): all-time totals by
    value, the recent days in detail, and the team's trust blocks. Built from the
    buckets' own JSON, without a model round trip: every snapshot goes through here."""
    first_day = (now.astimezone(UTC).date() - timedelta(days=SNAPSHOT_DAYS - 1)).isoformat()
    totals: dict[str, int] = {}
    days: dict[str, Any] = {}
    for day, bucket in sorted(buckets.items()):
        for value, n in bucket["activity"]["values"].items():
            totals[value] = totals.get(value, 0) + n
        if day >= first_day:
            activity = bucket["activity"]
            days[day] = {**activity, "links": nested(activity["links"]),
                         "hours": nested(activity["hours"])}  # fmt: skip
    return {"team_id": team_id, "generated_at": format_time(now), "days": days,
            "totals": totals, "trust": trust.model_dump(mode="json")}  # fmt: skip


def nested(flat: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """A bucket's ``"giver other": n`` as ``giver -> other -> n`` (buckets written
    before 2026-11-30 hold some nested already: those are added in)."""
    out: dict[str, dict[str, int]] = {}
    for key, n in flat.items():
        if isinstance(n, dict):
            inner = out.setdefault(key, {})
            for other, m in n.items():
                inner[other] = inner.get(other, 0) + m
        else:
            giver, _, other = key.partition(PAIR)
            inner = out.setdefault(giver, {})
            inner[other] = inner.get(other, 0) + n
    return out


def fit_snapshot(data: dict[str, Any], limit: int) -> int:
    """Make a snapshot's JSON fit in ``limit`` bytes (a record the broker takes): drop its
    oldest comment blocks first, then its oldest days. Return the bytes it was over."""
    over = excess = len(orjson.dumps(data)) - limit
    comments, days = data["trust"]["comments"], data["days"]
    while excess > 0 and (comments or days):
        if comments:  # sorted by time: the oldest first
            excess -= len(orjson.dumps(comments.pop(0)))
        else:
            day = min(days)
            excess -= len(orjson.dumps(days.pop(day))) + len(day)
        if excess <= 0:  # the estimate leaves out separators: measure again
            excess = len(orjson.dumps(data)) - limit
    return max(0, over)


def table_key(team_id: str, day: str) -> str:
    return f"{team_id}/{day}"


def chunk_key(key: str, n: int) -> str:
    """Where a bucket's sealed chunk ``n`` is kept: its own table, changelog and partition."""
    return f"{key}#{n}"


def is_chunk_key(key: str) -> bool:
    return "#" in key.rpartition("/")[2]  # an ISO day has no "#"


def split_key(key: str) -> tuple[str, str]:
    team_id, _, day = key.rpartition("/")
    return team_id, day
