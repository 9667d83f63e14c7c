"""Demo survey rounds: every team has its own trust profile, leaders mostly overrate it.

Two rounds, answered on the Tuesday of the last complete ISO week and four weeks before
it (so the next digest reports on the second and shows the change): each is opened,
answered through the feedback API with ``submitted_at`` (with each leader's prediction
first), and closed, which publishes its figures. The "legal" and "finance" teams have
three and two people: below k, they must show no figure anywhere. A round already closed
is left alone.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx

from shared.infra.settings import DEFAULT_DIMENSIONS

ROUNDS = {"pulse-1": 4, "pulse-2": 0}  # survey id -> weeks before the last complete week
DEMO_K = 5  # the default anonymity threshold
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
    profiles = {team: {d: rng.uniform(2.6, 4.4) for d in DEFAULT_DIMENSIONS} for team in teams}
    # How far each leader overrates their team: one in five is too modest instead.
    optimism = {team: (0.4, 0.8, 1.0, 1.2, -0.3)[i % 5] for i, team in enumerate(sorted(teams))}
    last_week = now.date() - timedelta(days=now.isoweekday() + 6)  # its Monday
    tuesday = datetime.combine(last_week + timedelta(days=1), time(10), UTC)
    existing = {r["survey_id"]: r["state"] for r in client.get("/v1/survey-rounds").json()}
    # The same people answer both rounds: a round whose turnout differs from the last by
    # fewer than k people is withheld by the differencing guard (README).
    answering: dict[str, list[dict[str, Any]]] = {}
    for team, members in sorted(teams.items()):
        answering[team] = [p for p in members if rng.random() < 0.85]
        if len(answering[team]) < DEMO_K:  # a round of fewer than k shows nothing: all answer
            answering[team] = members
    posted = 0
    for round_no, (survey, weeks_before) in enumerate(ROUNDS.items()):
        if existing.get(survey) == "closed":
            continue
        if survey not in existing:
            client.post("/v1/survey-rounds", json={"survey_id": survey}).raise_for_status()
        when = tuesday - timedelta(weeks=weeks_before)
        for team, members in sorted(teams.items()):
            lead = next(m["id"] for m in members if m["id"] in leads)
            profile = profiles[team]
            trend = 0.3 * round_no * rng.choice((-1, 1))
            predicted = {d: _clip(m + optimism[team], 1, 5) for d, m in profile.items()}
            assessment = {"survey_id": survey, "leader_id": lead, "predicted": predicted,
                          "submitted_at": (when - timedelta(days=1)).isoformat()}  # fmt: skip
            client.post("/v1/self-assessments", json=assessment).raise_for_status()
            for n, m in enumerate(answering[team]):
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
        client.post(f"/v1/survey-rounds/{survey}/close").raise_for_status()
    return posted
