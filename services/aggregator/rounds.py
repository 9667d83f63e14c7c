"""Pure trust aggregation: survey answers per round, published only once a round closes.

While a round is open, each respondent's latest answer is one *unit*, stored under its
own key (team, round, respondent): no record grows with the team, and nothing about an
open round is published, so a resubmission moves nothing anyone can read. The round
closes at a marker on each partition of the survey topic (``RoundClosed``): answers
before it in the log count, answers after it do not. At the marker, a team's units
become one *result* (sums from k or more respondents, or nothing), the units are
deleted, and the result never changes again (ARCHITECTURE §7).

Idempotent: a unit remembers the event that set it, so a redelivered or older event
changes nothing and a newer one from the same respondent replaces it; a round closes
once per partition.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.contract.events import (
    Answers,
    CommentBlock,
    DimensionSums,
    EnpsBlock,
    Prediction,
    SelfAssessed,
    SurveyResponded,
    SurveyTurnout,
    TeamTrust,
    TrustBlock,
)

State = dict[str, Any]  # a team's: {"results": [...], "predictions": [...], "sizes": [...]}
Unit = dict[str, Any]  # one respondent's latest answer to an open round
RETENTION = timedelta(days=70)  # 9 ISO weeks of trend plus the 28-day window's reach
MAX_RESULTS = 12  # closed rounds kept per team
MAX_PREDICTIONS = 12  # leader predictions kept per team
MAX_COMMENTS = 50  # comments published per team and round (a sample, in hash order)
MAX_GUARDED = 24  # published rounds per team whose sizes the differencing guard weighs


def new_state() -> State:
    return {"results": [], "predictions": [], "sizes": []}


def respond(unit: Unit | None, r: SurveyResponded, event_id: str, time: datetime) -> Unit | None:
    """The respondent's unit with this answer, or ``None`` if it changes nothing (a
    redelivery, or older than the answer it would replace). Sealed answers stay sealed
    (``"x"``) until the round closes (``opened``)."""
    stamp = (time.isoformat(), event_id)
    if unit is not None and stamp <= (unit["t"], unit["e"]):
        return None
    if r.sealed_answers is not None:
        return {"e": event_id, "t": stamp[0], "x": r.sealed_answers}
    return {"e": event_id, "t": stamp[0], "a": dict(r.answers or {}), "n": r.enps,
            "c": r.comment}  # fmt: skip


def opened(unit: Unit, answers: Answers) -> Unit:
    """A sealed unit with its answers, as ``close`` counts them."""
    return {"e": unit["e"], "t": unit["t"], "a": dict(answers.answers), "n": answers.enps,
            "c": answers.comment}  # fmt: skip


def _shuffled(comments: Iterable[str]) -> list[str]:
    # Ordered by a hash of the text: unrelated to who answered first.
    return sorted(comments, key=lambda c: hashlib.blake2b(c.encode()).digest())


def close(
    units: list[Unit], survey_id: str, dimension_of: Mapping[str, str], k: int, ck: int
) -> tuple[dict[str, Any], list[str]] | None:
    """A closed round's result for one team, and its comments; ``None`` below k."""
    if len(units) < k:
        return None
    sums: dict[str, list[int]] = {}
    for unit in units:
        for item, score in unit["a"].items():
            s = sums.setdefault(dimension_of.get(item, item), [0, 0, 0])
            s[0] += score
            s[1] += score >= 4
            s[2] += 1
    scores = [u["n"] for u in units if u["n"] is not None]
    comments = [u["c"] for u in units if u["c"] is not None]
    result = {
        "s": survey_id,
        "at": max(u["t"] for u in units),  # when its last answer was given
        "respondents": len(units),
        "dimensions": sums,
        "enps": [len(scores), sum(n >= 9 for n in scores), sum(n <= 6 for n in scores)]
        if len(scores) >= k
        else None,
    }
    return result, _shuffled(comments)[:MAX_COMMENTS] if len(comments) >= ck else []


def differ_by_few(published: Sequence[int], n: int, k: int) -> bool:
    """Whether a group of ``n`` people, beside groups of the ``published`` sizes, lets some
    combination of them (each added, subtracted or left out) come to 1 to k - 1 people.

    Respondents are known only by a token per round, so which people two rounds share
    cannot be known; whoever reads the figures can assume the most: that a round of six is
    an earlier round of five plus one, each answering as before. Then six times the one
    mean minus five times the other is that one person's answer. Sums of whole rounds
    (any window) are combinations too. Only sizes can be weighed, so this holds back every
    round that makes such a combination possible (ARCHITECTURE §7, differencing guard)."""
    reach = {0}
    for size in published:
        reach |= {d + size for d in reach} | {d - size for d in reach}
    return any(0 < abs(n + d) < k for d in reach)


def guarded(state: State | None, result: dict[str, Any], k: int) -> dict[str, Any] | None:
    """``result`` as the differencing guard lets it be published beside the team's
    published rounds: whole, without its eNPS (whose scores alone would single someone
    out), or not at all (``None``)."""
    sizes = _sizes(state or new_state())
    if differ_by_few([r for r, _ in sizes], result["respondents"], k):
        return None
    enps = result["enps"]
    if enps is not None and differ_by_few([e for _, e in sizes if e], enps[0], k):
        return {**result, "enps": None}
    return result


def add_result(state: State | None, result: dict[str, Any]) -> State:
    """The state with a published round's result (and its sizes, for the guard) added."""
    state = state or new_state()
    state["sizes"] = [*_sizes(state), _size(result)][-MAX_GUARDED:]
    state["results"] = sorted([*state["results"], result], key=lambda r: (r["at"], r["s"]))
    return state


def _size(result: dict[str, Any]) -> list[int]:
    return [result["respondents"], result["enps"][0] if result["enps"] else 0]


def _sizes(state: State) -> list[list[int]]:
    """The sizes of the team's published rounds (from its results, for a state kept
    before the guard)."""
    if "sizes" in state:
        return list(state["sizes"])
    return [_size(r) for r in state["results"]]


def assess(state: State | None, a: SelfAssessed, event_id: str, time: datetime) -> State | None:
    """Return the state with a leader's prediction added, or ``None`` if already there."""
    result = state or new_state()
    if any(p["e"] == event_id for p in result["predictions"]):
        return None
    result["predictions"].append({"e": event_id, "t": time.isoformat(), "p": a.predicted})
    result["predictions"].sort(key=lambda p: (p["t"], p["e"]))
    return result


def prune(state: State, now: datetime) -> list[str]:
    """Forget results and predictions past the retention period or the count limits;
    return the rounds whose results went (their comments go too)."""
    cutoff = (now - RETENTION).isoformat()
    kept = [r for r in state["results"] if r["at"] >= cutoff][-MAX_RESULTS:]
    gone = [r["s"] for r in state["results"] if r not in kept]
    state["results"] = kept
    recent = [p for p in state["predictions"] if p["t"] >= cutoff][-MAX_PREDICTIONS:]
    state["predictions"] = recent or state["predictions"][-1:]
    return gone


def team_trust(state: State | None, comments_of: Mapping[str, list[str]]) -> TeamTrust:
    """What may be published: every closed round of k or more respondents, whole."""
    if state is None:
        return TeamTrust()
    blocks, enps, comments, surveys = [], [], [], {}
    for r in state["results"]:
        at = datetime.fromisoformat(r["at"])
        dims = {d: DimensionSums(total=t, favorable=f, n=n) for d, (t, f, n) in
                r["dimensions"].items()}  # fmt: skip
        blocks.append(TrustBlock(at=at, respondents=r["respondents"], dimensions=dims))
        if r["enps"] is not None:
            n, promoters, detractors = r["enps"]
            enps.append(EnpsBlock(at=at, n=n, promoters=promoters, detractors=detractors))
        if texts := comments_of.get(r["s"]):
            comments.append(CommentBlock(at=at, comments=tuple(texts)))
        surveys[r["s"]] = SurveyTurnout(respondents=r["respondents"], last_at=at)
    predictions = [
        Prediction(at=datetime.fromisoformat(p["t"]), predicted=p["p"])
        for p in state["predictions"]
    ]
    return TeamTrust(blocks=tuple(blocks), enps=tuple(enps), comments=tuple(comments),
                     surveys=surveys, predictions=tuple(predictions))  # fmt: skip
