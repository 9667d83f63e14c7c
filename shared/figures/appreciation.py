"""Appreciation figures over trailing windows, computed at read time from day buckets.

Windows end today (UTC) and include it: "7d" is today and the six days before. Computed
when read, so a gauge decays even when no event arrives (ARCHITECTURE §5).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, timedelta

from shared.contract.events import DayActivity, TeamSnapshot

WINDOWS = {"7d": 7, "28d": 28}
UNRECOGNIZED_DAYS = 30


def window(snapshot: TeamSnapshot | None, today: date, days: int) -> list[DayActivity]:
    """The snapshot's day buckets in the ``days`` days ending with ``today``."""
    if snapshot is None:
        return []
    first = (today - timedelta(days=days - 1)).isoformat()
    last = today.isoformat()
    return [a for d, a in snapshot.days.items() if first <= d <= last]


def received_by(days: Sequence[DayActivity]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in days:
        for person, n in a.received.items():
            counts[person] = counts.get(person, 0) + n
    return counts


def coverage(members: Collection[str], days: Sequence[DayActivity]) -> float | None:
    """Share of members recognized at least once; ``None`` for a team without members."""
    if not members:
        return None
    recognized = {p for a in days for p in a.received}
    return len(recognized & set(members)) / len(members)


def givers_ratio(members: Collection[str], days: Sequence[DayActivity]) -> float | None:
    """Share of members who gave at least one recognition."""
    if not members:
        return None
    givers = {p for a in days for p in a.given}
    return len(givers & set(members)) / len(members)


def share(days: Sequence[DayActivity], field: str) -> float | None:
    """Share of received recognitions with ``field`` (cross_team, upward, downward)."""
    received = sum(a.received_count for a in days)
    if received == 0:
        return None
    return sum(int(getattr(a, field)) for a in days) / received


def gini(counts: Sequence[int]) -> float | None:
    """Gini coefficient (0 = everyone equal, →1 = one person gets it all)."""
    n = len(counts)
    total = sum(counts)
    if n == 0 or total == 0:
        return None
    # Sorted-rank form of the mean absolute difference: O(n log n), not O(n²).
    ranked = sum((2 * i - n + 1) * x for i, x in enumerate(sorted(counts)))
    return ranked / (n * total)


def received_gini(members: Collection[str], days: Sequence[DayActivity]) -> float | None:
    """Inequality of recognition received among members, people with none included."""
    counts = received_by(days)
    return gini([counts.get(m, 0) for m in members])


def unrecognized(members: Collection[str], days: Sequence[DayActivity]) -> int:
    """Members with no recognition in ``days``."""
    recognized = {p for a in days for p in a.received}
    return len(set(members) - recognized)
