"""Demo survey rounds: every team has its own trust profile, leaders mostly overrate it.

Two rounds, on the Tuesday of the last complete ISO week and four weeks before it (so
the next digest reports on the second and shows the change), posted through the
feedback API with ``submitted_at``, plus each leader's prediction before each round.
The "legal" team has three people: below k, it must show no trust figure anywhere.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx

from shared.settings import DEFAULT_DIMENSIONS

ROUNDS = {"pulse-1": 4, "pulse-2": 0}  # survey id -> weeks before the last complete week
COMMENTS = (
    "Fewer meetings would give us time to think.",
    "I would like clearer priorities for next quarter.",
    "Thanks for protecting the team during the reorg.",
    "Feedback on my work comes too late to be useful.",
    "I love how we help each other out.",
    "Decisions get made without us and we hear about them later.",
)


def _clip(x: float, low: int, high: int) -> int:
    return max(low, min(high, round(x)))


def post_rounds(
    client: httpx.Client, rng: random.Random, people: list[dict[str, Any]], now: datetime
) -> int:
    """Post both rounds; return the number of survey responses posted."""
    leads = {p["manager_id"] for p in people if p["manager_id"] not in (None, "p000")}
    teams: dict[str, list[dict[str, Any]]] = {}
    for p in people:
        if p["manager_id"] is not None:  # the head of people is surveyed by nobody here
            teams.setdefault(p["team_id"], []).append(p)
    last_week = now.date() - timedelta(days=now.isoweekday() + 6)  # its Monday
    tuesday = datetime.combine(last_week + timedelta(days=1), time(10), UTC)
    posted = 0
    for _, members in sorted(teams.items()):
        profile = {d: rng.uniform(2.6, 4.4) for d in DEFAULT_DIMENSIONS}
        lead = next(m["id"] for m in members if m["id"] in leads)
        optimism = rng.choice((0.4, 0.8, 1.0, 1.2, -0.3))  # one in five is too modest
        for round_no, (survey, weeks_before) in enumerate(ROUNDS.items()):
            when = tuesday - timedelta(weeks=weeks_before)
            trend = 0.3 * round_no * rng.choice((-1, 1))
            predicted = {d: _clip(m + optimism, 1, 5) for d, m in profile.items()}
            assessment = {"survey_id": survey, "leader_id": lead, "predicted": predicted,
                          "submitted_at": (when - timedelta(days=1)).isoformat()}  # fmt: skip
            client.post("/v1/self-assessments", json=assessment).raise_for_status()
            for n, m in enumerate(p for p in members if rng.random() < 0.85):
                answers = {d: _clip(rng.gauss(mean + trend, 0.9), 1, 5)
                           for d, mean in profile.items()}  # fmt: skip
                body: dict[str, Any] = {
                    "survey_id": survey,
                    "respondent_id": m["id"],
                    "answers": answers,
                    "enps": _clip(rng.gauss(2 * sum(answers.values()) / 7 + 1.5, 1.5), 0, 10),
                    "submitted_at": (when + timedelta(minutes=37 * n)).isoformat(),
                }
                if rng.random() < 0.35:
                    body["comment"] = rng.choice(COMMENTS)
                headers = {"Idempotency-Key": f"demo-{survey}-{m['id']}"}
                client.post("/v1/survey-responses", json=body, headers=headers).raise_for_status()
                posted += 1
    return posted
