"""Pure trust aggregation: survey answers into k-anonymous blocks, one state per team.

A team's state holds its recent responses ("units", one per survey and respondent)
and how they are grouped into blocks. A unit joins the oldest open block that does
not hold its respondent yet; a block with k units is complete and from then on only
published as a whole (see ``TrustBlock``). Blocks are formed in log order, so a replay
forms the same blocks. Three kinds of block, because not every response has an eNPS
score or a comment: "trust" (every response), "enps" and "comments".

Idempotent: a unit remembers the event that set it; a redelivered or older event
changes nothing, a newer one from the same respondent to the same survey replaces it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from shared.events import (
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

State = dict[str, Any]
KINDS = ("trust", "enps", "comments")
RETENTION = timedelta(days=70)  # 9 ISO weeks of trend plus the 28-day window's reach


def new_state() -> State:
    return {"units": {}, "blocks": {kind: [] for kind in KINDS}, "predictions": []}


def _kinds(unit: Mapping[str, Any]) -> set[str]:
    kinds = {"trust"}
    if unit["n"] is not None:
        kinds.add("enps")
    if unit["c"] is not None:
        kinds.add("comments")
    return kinds


def _newer(event: tuple[str, str], current: Mapping[str, Any]) -> bool:
    """Whether an event (time, id) supersedes the one that set ``current``."""
    return event > (current["t"], current["e"])


def _place(state: State, kind: str, key: str, k: int) -> None:
    respondent = state["units"][key]["r"]
    blocks: list[list[str]] = state["blocks"][kind]
    for block in blocks:
        if len(block) < k and all(state["units"][u]["r"] != respondent for u in block):
            block.append(key)
            return
    blocks.append([key])


def _unplace(state: State, kind: str, key: str) -> None:
    for block in state["blocks"][kind]:
        if key in block:
            block.remove(key)
    state["blocks"][kind] = [b for b in state["blocks"][kind] if b]


def respond(
    state: State | None, r: SurveyResponded, event_id: str, time: datetime, k: int
) -> State | None:
    """Return the state with the response applied, or ``None`` if it changes nothing."""
    result = state or new_state()
    key = f"{r.survey_id}/{r.respondent}"
    stamp = (time.isoformat(), event_id)
    old = result["units"].get(key)
    if old is not None and not _newer(stamp, old):
        return None  # a redelivery, or older than the answer it would replace
    unit = {"e": event_id, "t": stamp[0], "s": r.survey_id, "r": r.respondent,
            "a": dict(r.answers), "n": r.enps, "c": r.comment}  # fmt: skip
    result["units"][key] = unit
    before = _kinds(old) if old is not None else set()
    for kind in before - _kinds(unit):
        _unplace(result, kind, key)
    for kind in sorted(_kinds(unit) - before):
        _place(result, kind, key, k)
    return result


def assess(state: State | None, a: SelfAssessed, event_id: str, time: datetime) -> State | None:
    """Return the state with a leader's prediction added, or ``None`` if already there."""
    result = state or new_state()
    if any(p["e"] == event_id for p in result["predictions"]):
        return None
    result["predictions"].append({"e": event_id, "t": time.isoformat(), "p": a.predicted})
    result["predictions"].sort(key=lambda p: (p["t"], p["e"]))
    return result


def prune(state: State, now: datetime) -> None:
    """Forget blocks completed and units given before the retention period."""
    cutoff = (now - RETENTION).isoformat()
    units = state["units"]
    for kind in KINDS:
        # Whole blocks or nothing: a published block must never change its members.
        state["blocks"][kind] = [
            b for b in state["blocks"][kind] if max(units[u]["t"] for u in b) >= cutoff
        ]
    referenced = {u for kind in KINDS for block in state["blocks"][kind] for u in block}
    state["units"] = {key: u for key, u in units.items() if key in referenced}
    recent = [p for p in state["predictions"] if p["t"] >= cutoff]
    state["predictions"] = recent or state["predictions"][-1:]


def _at(units: list[Mapping[str, Any]]) -> datetime:
    return datetime.fromisoformat(max(u["t"] for u in units))


def _shuffled(comments: list[str]) -> tuple[str, ...]:
    # Ordered by a hash of the text: unrelated to who answered first.
    return tuple(sorted(comments, key=lambda c: hashlib.blake2b(c.encode()).digest()))


def team_trust(state: State | None, dimension_of: Mapping[str, str], k: int, ck: int) -> TeamTrust:
    """What may be published: complete blocks only, and turnout in steps of k respondents."""
    if state is None:
        return TeamTrust()
    units = state["units"]

    def complete(kind: str, size: int) -> list[list[Mapping[str, Any]]]:
        return [[units[u] for u in b] for b in state["blocks"][kind] if len(b) >= size]

    blocks = []
    for members in complete("trust", k):
        sums: dict[str, list[int]] = {}
        for unit in members:
            for item, score in unit["a"].items():
                s = sums.setdefault(dimension_of.get(item, item), [0, 0, 0])
                s[0] += score
                s[1] += score >= 4
                s[2] += 1
        dims = {d: DimensionSums(total=t, favorable=f, n=n) for d, (t, f, n) in sums.items()}
        blocks.append(TrustBlock(at=_at(members), respondents=len(members), dimensions=dims))
    enps = [
        EnpsBlock(at=_at(m), n=len(m), promoters=sum(u["n"] >= 9 for u in m),
                  detractors=sum(u["n"] <= 6 for u in m))
        for m in complete("enps", k)
    ]  # fmt: skip
    comments = [
        CommentBlock(at=_at(m), comments=_shuffled([u["c"] for u in m]))
        for m in complete("comments", ck)
    ]
    by_survey: dict[str, list[Mapping[str, Any]]] = {}
    for unit in units.values():
        by_survey.setdefault(unit["s"], []).append(unit)
    surveys = {}
    for survey, us in sorted(by_survey.items()):
        # In steps of k too: a count ticking up by one tells who has just answered.
        steps = len(us) // k * k
        if steps:
            last = sorted(u["t"] for u in us)[steps - 1]
            surveys[survey] = SurveyTurnout(respondents=steps, last_at=datetime.fromisoformat(last))
    predictions = [
        Prediction(at=datetime.fromisoformat(p["t"]), predicted=p["p"])
        for p in state["predictions"]
    ]
    return TeamTrust(
        blocks=tuple(sorted(blocks, key=lambda b: b.at)),
        enps=tuple(sorted(enps, key=lambda b: b.at)),
        comments=tuple(sorted(comments, key=lambda b: b.at)),
        surveys=surveys,
        predictions=tuple(predictions),
    )
