"""Once per event: the same (source, id) is fanned out once, whatever else its record says.

A recognition's partition of ``rapport.recognition.v1`` is its producer's choice (the
services key it by event, see ``shared.events.event_key``); the fan-out stage sends a
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
and every ``CHUNK`` pairs move to ``{partition}/{day}#{i}``, written once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, MutableMapping
from datetime import date, timedelta
from typing import Any, Literal

CHUNK = 512  # pairs per sealed chunk
Verdict = Literal["new", "again", "duplicate"]


def event_hash(source: str, event_id: str) -> int:
    digest = hashlib.blake2b(f"{source}\x1f{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) >> 1


def record_hash(value: bytes | None, headers: Iterable[tuple[str, bytes]]) -> int:
    h = hashlib.blake2b(value or b"", digest_size=8)
    for name, raw in sorted(headers):
        h.update(b"\x1f" + name.encode() + b"\x1e" + raw)
    return int.from_bytes(h.digest()) >> 1


def day_key(partition: int, day: str) -> str:
    return f"{partition}/{day}"


class SeenEvents:
    """The events fanned out per partition, over a table's ``data`` (see the module)."""

    def __init__(self, data: MutableMapping[str, Any], horizon_days: int) -> None:
        self.data = data
        self.horizon_days = horizon_days
        self._index: dict[int, dict[int, int]] = {}  # partition -> event -> record

    def rebuild(self, partitions: Iterable[int]) -> None:
        """Read the table again for ``partitions`` (after a rebalance)."""
        self._index = {p: {} for p in partitions}
        for key, value in list(self.data.items()):
            p, _, rest = key.partition("/")
            if "#" in rest or int(p) not in self._index:
                continue
            index = self._index[int(p)]
            pairs = [*value["fresh"]]
            for i in range(value["sealed"]):
                pairs += self.data[f"{key}#{i}"]
            index.update(zip(pairs[::2], pairs[1::2], strict=True))

    def verdict(self, partition: int, event: int, record: int) -> Verdict:
        seen = self._index.get(partition, {}).get(event)
        if seen is None:
            return "new"
        return "again" if seen == record else "duplicate"

    def add(self, partition: int, event: int, record: int) -> None:
        """``event`` was fanned out from ``record``: a later record of it is a duplicate."""
        self._index.setdefault(partition, {})[event] = record

    def remember(self, partition: int, day: str, pairs: list[int]) -> list[tuple[str, Any]]:
        """Add ``pairs`` (event, record, ...: added today) to the day's entry; return the
        table writes, a sealed chunk before the entry that counts it."""
        key = day_key(partition, day)
        entry = self.data.get(key) or {"fresh": [], "sealed": 0}
        entry["fresh"].extend(pairs)
        writes: list[tuple[str, Any]] = []
        if len(entry["fresh"]) >= 2 * CHUNK:
            writes.append((f"{key}#{entry['sealed']}", entry["fresh"]))
            entry = {"fresh": [], "sealed": entry["sealed"] + 1}
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
