"""Trust figures for a window, computed at read time from a team's k-anonymous blocks.

Only what the aggregator published is used: complete blocks of k respondents, survey
turnout from k respondents up. So a consumer cannot compute a figure from fewer than
k people, nor two figures that differ by fewer than k (ARCHITECTURE §7).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from shared.contract.events import TeamTrust

PREDICTION_REACH = timedelta(days=28)  # a leader's prediction applies this long before a window


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime  # inclusive
    end: datetime  # exclusive


@dataclass(frozen=True, slots=True)
class TrustFigures:
    responses: int  # behind the figures: a multiple of k
    index: float  # 0-100: mean over dimensions of the favorable share, in percent
    scores: dict[str, float]  # dimension -> mean answer (1-5)
    favorable: dict[str, float]  # dimension -> share of favorable answers (0-1)
    enps: float | None  # -100..100, when k respondents gave a score
    participation: float | None  # respondents of the latest survey / active members
    gap: dict[str, float]  # dimension -> leader's predicted score - team's mean score


def trailing(today: date, days: int) -> Window:
    """The ``days`` UTC days ending with (and including) ``today``."""
    end = datetime.combine(today + timedelta(days=1), time(), UTC)
    return Window(end - timedelta(days=days), end)


def iso_week(week: str) -> Window:
    """The UTC Monday-to-Monday span of an ISO week written ``YYYY-Www``."""
    year, _, number = week.partition("-W")
    start = datetime.combine(date.fromisocalendar(int(year), int(number), 1), time(), UTC)
    return Window(start, start + timedelta(days=7))


def figures(trust: TeamTrust, window: Window, members: int) -> TrustFigures | None:
    """The team's figures for ``window``; ``None`` when no complete block falls in it."""
    blocks = [b for b in trust.blocks if window.start <= b.at < window.end]
    if not blocks:
        return None
    totals: dict[str, list[int]] = {}
    for block in blocks:
        for dim, s in block.dimensions.items():
            t = totals.setdefault(dim, [0, 0, 0])
            t[0] += s.total
            t[1] += s.favorable
            t[2] += s.n
    scores = {d: total / n for d, (total, _, n) in totals.items()}
    favorable = {d: fav / n for d, (_, fav, n) in totals.items()}
    return TrustFigures(
        responses=sum(b.respondents for b in blocks),
        index=100 * sum(favorable.values()) / len(favorable),
        scores=scores,
        favorable=favorable,
        enps=_enps(trust, window),
        participation=_participation(trust, window, members),
        gap=_gap(trust, window, scores),
    )


def _enps(trust: TeamTrust, window: Window) -> float | None:
    blocks = [b for b in trust.enps if window.start <= b.at < window.end]
    n = sum(b.n for b in blocks)
    if n == 0:
        return None
    return 100 * (sum(b.promoters for b in blocks) - sum(b.detractors for b in blocks)) / n


def _participation(trust: TeamTrust, window: Window, members: int) -> float | None:
    turnouts = [t for t in trust.surveys.values() if window.start <= t.last_at < window.end]
    if not turnouts or members == 0:
        return None
    latest = max(turnouts, key=lambda t: t.last_at)
    # People who answered and have left since can push it past 1: report at most all.
    return min(1.0, latest.respondents / members)


def _gap(trust: TeamTrust, window: Window, scores: dict[str, float]) -> dict[str, float]:
    """Latest prediction made before the window ends (and not long before it starts)."""
    made = [p for p in trust.predictions if window.start - PREDICTION_REACH <= p.at < window.end]
    if not made:
        return {}
    latest = max(made, key=lambda p: p.at)
    return {d: latest.predicted[d] - scores[d] for d in scores if d in latest.predicted}
