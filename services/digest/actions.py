"""Two or three things a manager could do this week, drawn from what the team says is weak.

The weakest dimension (lowest favorable share) and the largest perception gap (where the
manager overrates the team most) come first; recognition nudges fill the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.contract.text import display_name

if TYPE_CHECKING:
    from .service import Named, TrustPart

MAX_ACTIONS = 3
NAMED = 3  # people named in a suggestion, then "and n more"
LOW_COVERAGE = 0.5
BY_DIMENSION = {
    "direction": "Restate the team's top three priorities this week, and ask each person "
    "how their work connects to them.",
    "empowerment": "Pick one decision you usually make yourself and hand it to the person "
    "closest to the work.",
    "appreciation": "Thank someone specifically for something they did this week, and say "
    "what difference it made.",
    "growth": "Ask each report in your next 1:1 what they want to learn next, and find one "
    "project that stretches them.",
    "transparency": "Share one piece of news you have been holding back, including the "
    "parts that are still uncertain.",
    "partnership": "Ask your team which of your decisions they would have made differently, "
    "and act on one answer.",
    "wellbeing": "Check workloads in your next team meeting and take one thing off the "
    "busiest person's plate.",
}
GENERIC = "Ask your team in your next meeting what would make this a 4 or 5 for them."


def names(people: Sequence[Named]) -> str:
    """The first people by name, as shown (``display_name``), and how many more."""
    shown = ", ".join(display_name(p.name) for p in people[:NAMED])
    return shown + (f" and {len(people) - NAMED} more" if len(people) > NAMED else "")


def _gap_action(dimension: str, gap: float) -> str:
    return (
        f"You rated {dimension} {gap:.1f} points higher than your team did. Ask them what "
        "you are not seeing, and listen before you answer."
    )


def suggest(
    trust: TrustPart | None, unrecognized: Sequence[Named], coverage: float | None
) -> list[str]:
    """Two or three suggested actions, most useful first."""
    actions: list[str] = []
    if trust is not None and trust.dimensions:
        weakest = min(trust.dimensions, key=lambda d: (d.favorable, d.dimension))
        actions.append(BY_DIMENSION.get(weakest.dimension, GENERIC))
        gaps = [d for d in trust.dimensions if d.gap is not None and d.gap > 0]
        if gaps:
            widest = max(gaps, key=lambda d: (d.gap or 0, d.dimension))
            actions.append(_gap_action(widest.dimension, widest.gap or 0))
    if unrecognized:
        actions.append(f"Recognize {names(unrecognized)}: no kudos in two weeks.")
    if coverage is not None and coverage < LOW_COVERAGE:
        actions.append(
            "Open your next team meeting with two minutes of thanks: fewer than half the "
            "team were recognized last week."
        )
    if len(actions) < 2:
        actions.append(
            "Thank someone from another team who helped yours: recognition across teams "
            "builds the relationships that silos lack."
        )
    return actions[:MAX_ACTIONS]
