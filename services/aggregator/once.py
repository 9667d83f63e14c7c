"""Once per event: the same (source, id) is fanned out once, whatever else its record says.

A recognition's partition of ``rapport.recognition.v1`` is its producer's choice (the
services key it by event, see ``shared.contract.events.event_key``); the fan-out stage sends a
record that is not on its event's partition to that partition of the internal events
topic first, so that one worker, holding one partition of this state, sees every record
of an event.

Per partition, the state keeps each event first fanned out in the last ``horizon_days``:
a 63-bit hash of (source, id) and a 63-bit hash of the whole record. The same record
again (a redelivery after a crash, or a producer's retry) is fanned out again: its facts
are counted once downstream, and a crash between its facts and this state can lose
neither. Another record with the same identity (another day, another recipient, a
client retrying after midnight) is a duplicate: dropped and counted.

Table layout, like the team buckets (``service.seal``): key ``{partition}/{day}`` holds
``{"fresh": [event, record, ...], "sealed": n}`` for the events first seen that UTC day,
and every ``CHUNK`` pairs move to ``{partition}/{day}#{i}``, written once; in memory,
their ids are arrays (``service.Ids``).

What a worker looks the events up in (``Index``) is sorted numpy arrays, 16 bytes an
event: as a dict of ints, 1,000,000 events took 98 MB (their ``sys.getsizeof``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, MutableMapping
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from . import service

CHUNK = 512  # pairs per sealed chunk
MERGE = 4096  # events of a partition kept in a dict before they go into its arrays
Verdict = Literal["new", "again", "duplicate"]


def event_hash(source: str, event_id: str) -> int:
    digest = hashlib.blake2b(f"{source}\x1f{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 1


def record_hash(value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> int:
    # The value, then each header as "\x1f name \x1e raw", in name order: one buffer.
    named = b"".join([b"\x1f%s\x1e%s" % (name.encode(), raw) for name, raw in sorted(headers)])
    return int.from_bytes(hashlib.blake2b((value or b"") + named, digest_size=8).digest()) >> 1


def day_key(partition: int, day: str) -> str:
    return f"{partition}/{day}"


class Index:
    """The events of one partition, each with the record it was first fanned out from:
    the latest in a dict, the rest in two sorted arrays they go into ``MERGE`` at a
    time (or an eighth of the arrays, so that each event is copied a few times at most)."""

    def __init__(self, pairs: npt.NDArray[np.int64] | None = None) -> None:
        """``pairs``: event, record, ... (an event twice: its last record counts, as in
        a dict)."""
        pairs = np.empty(0, np.int64) if pairs is None else pairs[::-1]  # record, event, ...
        events, last = np.unique(pairs[1::2], return_index=True)  # sorted
        self.events: npt.NDArray[np.int64] = events
        self.records: npt.NDArray[np.int64] = pairs[::2][last]
        self.latest: dict[int, int] = {}

    def get(self, event: int) -> int | None:
        if (record := self.latest.get(event)) is not None:
            return record
        i = int(self.events.searchsorted(event))
        if i < len(self.events) and self.events[i] == event:
            return int(self.records[i])
        return None

    def add(self, event: int, record: int) -> None:
        """Add an event not in the index yet (``get`` said None)."""
        self.latest[event] = record
        if len(self.latest) >= max(MERGE, len(self.events) // 8):
            events = np.fromiter(self.latest, np.int64, len(self.latest))
            records = np.fromiter(self.latest.values(), np.int64, len(self.latest))
            order = events.argsort()
            events, records = events[order], records[order]
            at = self.events.searchsorted(events)
            self.events = np.insert(self.events, at, events)
            self.records = np.insert(self.records, at, records)
            self.latest = {}


class SeenEvents:
    """The events fanned out per partition, over a table's ``data`` (see the module)."""

    def __init__(self, data: MutableMapping[str, Any], horizon_days: int) -> None:
        self.data = data
        self.horizon_days = horizon_days
        self._index: dict[int, Index] = {}  # partition -> its events

    def rebuild(self, partitions: Iterable[int]) -> None:
        """Read the table again for ``partitions`` (after a rebalance)."""
        pairs: dict[int, list[Iterable[int]]] = {p: [] for p in partitions}
        for key, value in list(self.data.items()):
            partition, _, rest = key.partition("/")
            if "#" in rest or int(partition) not in pairs:
                continue
            of = pairs[int(partition)]
            of += [self.data[f"{key}#{i}"] for i in range(value["sealed"])]
            of.append(value["fresh"])
        self._index = {}
        for p, some in pairs.items():
            arrays = [np.asarray(ids, np.int64) for ids in some]
            self._index[p] = Index(np.concatenate(arrays) if arrays else None)

    def verdict(self, partition: int, event: int, record: int) -> Verdict:
        index = self._index.get(partition)
        seen = index.get(event) if index is not None else None
        if seen is None:
            return "new"
        return "again" if seen == record else "duplicate"

    def add(self, partition: int, event: int, record: int) -> None:
        """``event`` was fanned out from ``record``: a later record of it is a duplicate."""
        if (index := self._index.get(partition)) is None:
            index = self._index[partition] = Index()
        index.add(event, record)

    def remember(self, partition: int, day: str, pairs: list[int]) -> list[tuple[str, Any]]:
        """Add ``pairs`` (event, record, ...: added today) to the day's entry; return the
        table writes, a sealed chunk before the entry that counts it."""
        key = day_key(partition, day)
        entry = self.data.get(key) or {"fresh": service.ids(), "sealed": 0}
        entry["fresh"].extend(pairs)
        writes: list[tuple[str, Any]] = []
        if len(entry["fresh"]) >= 2 * CHUNK:
            writes.append((f"{key}#{entry['sealed']}", entry["fresh"]))
            entry = {"fresh": service.ids(), "sealed": entry["sealed"] + 1}
        writes.append((key, entry))
        for k, v in writes:
            self.data[k] = v
        return writes

    def expired(self, today: date) -> list[str]:
        """Keys of this worker's days past the horizon (with their chunks), taken out of
        the table."""
        first = (today - timedelta(days=self.horizon_days)).isoformat()
        mine = {str(p) for p in self._index}
        old = [k for k in self.data
               if k.partition("/")[0] in mine and k.partition("/")[2][:10] < first]  # fmt: skip
        for k in old:
            del self.data[k]
        if old:
            self.rebuild(list(self._index))
        return old
