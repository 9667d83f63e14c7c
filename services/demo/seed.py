"""Seed a demo org (~60 people, 8 teams), ~9 weeks of skewed kudos and two survey rounds.

So that the connection figures show something: a silo team that only recognizes itself
and is thanked by nobody outside, a few isolated people who neither give nor receive, and
one pair who trade recognitions with each other.

Deterministic (fixed random seed, fixed event ids), so seeding twice counts once.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.infra.settings import DEFAULT_DIMENSIONS

from . import surveys

log = logging.getLogger(__name__)
TEAMS = ("platform", "mobile", "data", "design", "sales", "support", "people", "legal", "finance")
# Reports in the teams below the anonymity threshold (k = 5): no figure of any kind. Three
# and two people, five together, so no other team is hidden to protect them (README,
# "Privacy").
SMALL_TEAMS = {"legal": 2, "finance": 1}
SILO_TEAM = "sales"
ISOLATED_IN = ("data", "design", "support")  # the last person of each gives and gets none
TRADING_IN = "support"  # its second and third person trade kudos over the last 3 weeks
TRADES = 8  # each way
FIRST = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elif",
    "Femi",
    "Greta",
    "Hiro",
    "Ines",
    "Jon",
    "Kai",
    "Lena",
    "Mateo",
    "Nia",
    "Omar",
    "Priya",
]
LAST = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad", "Kowalski")
TIMEZONES = ("Europe/Berlin", "Europe/London", "America/New_York", "Asia/Tokyo")
MESSAGES = (
    "Thanks for unblocking the release today.",
    "Your review caught a bug that would have hurt customers.",
    "You made the onboarding session genuinely fun.",
    "Thank you for covering the on-call shift at short notice.",
    "Great write-up; it made the decision easy for everyone.",
    "You listened, and it changed how we planned the sprint.",
)
DAYS = 63  # the digest's eight-week trend, and a little more


def build_people(rng: random.Random) -> list[dict[str, Any]]:
    people = [_person(0, "Morgan Reyes", "people", None, "Europe/London")]
    n = 1
    for team in TEAMS:
        lead = _person(n, f"{rng.choice(FIRST)} {rng.choice(LAST)}", team, "p000",
                       rng.choice(TIMEZONES))  # fmt: skip
        people.append(lead)
        n += 1
        for _ in range(SMALL_TEAMS[team] if team in SMALL_TEAMS else rng.randint(6, 9)):
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            people.append(_person(n, name, team, lead["id"], lead["timezone"]))
            n += 1
    return people


def _person(n: int, name: str, team: str, manager: str | None, tz: str) -> dict[str, Any]:
    pid = f"p{n:03d}"
    email = f"{name.split()[0].lower()}.{pid}@example.com"
    return {"id": pid, "name": name, "email": email, "team_id": team,
            "manager_id": manager, "timezone": tz, "active": True}  # fmt: skip


def build_recognitions(
    rng: random.Random, people: list[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    """Kudos with a long tail: a few stars, many occasional, some never recognized; the
    silo, the isolated and the trading pair of the module's docstring."""
    weights = {p["id"]: rng.choice((0, 0, 1, 1, 1, 2, 3, 8)) for p in people}
    by_team: dict[str, list[str]] = {}
    for p in people:
        by_team.setdefault(p["team_id"], []).append(p["id"])
    team_of = {p["id"]: p["team_id"] for p in people}
    isolated = {by_team[t][-1] for t in ISOLATED_IN}
    weights.update(dict.fromkeys(isolated, 0))
    outside = [p for p in weights if team_of[p] != SILO_TEAM]
    value_weights = (5, 3, 4, 2, 2, 3, 1)
    out = []
    traders = set(by_team[TRADING_IN][1:3])
    for i in range(DAYS * 9):
        giver = rng.choice(people)["id"]
        if giver in isolated or (giver in traders and rng.random() < 0.75):
            continue  # the traders give mostly to each other (below)
        own = by_team[team_of[giver]]
        pool = own if team_of[giver] == SILO_TEAM or rng.random() >= 0.25 else outside
        candidates = [p for p in pool if p != giver and weights[p] > 0]
        if not candidates:
            continue
        k = 2 if rng.random() < 0.15 and len(candidates) > 1 else 1
        recipients: set[str] = set()
        while len(recipients) < k:
            recipients.add(rng.choices(candidates, [weights[c] for c in candidates])[0])
        values = set(rng.choices(DEFAULT_DIMENSIONS, value_weights, k=rng.randint(1, 2)))
        occurred = now - timedelta(days=rng.uniform(0, DAYS))
        out.append({
            "event_id": f"demo-{i:05d}",
            "giver_id": giver,
            "recipient_ids": sorted(recipients),
            "values": sorted(values),
            "message": rng.choice(MESSAGES),
            "channel": rng.choice(("slack", "slack", "hr-portal", "api")),
            "occurred_at": occurred.isoformat(),
        })  # fmt: skip
    a, b = sorted(traders)
    for n in range(2 * TRADES):
        giver, recipient = (a, b) if n % 2 == 0 else (b, a)
        out.append({
            "event_id": f"demo-trade-{n:02d}",
            "giver_id": giver,
            "recipient_ids": [recipient],
            "values": ["partnership"],
            "message": rng.choice(MESSAGES),
            "channel": "slack",
            "occurred_at": (now - timedelta(days=1 + n, hours=rng.uniform(0, 12))).isoformat(),
        })  # fmt: skip
    return out


def wait_ready(*urls: str, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        try:
            if httpx.get(f"{pending[0]}/readyz", timeout=2).status_code == 200:
                pending.pop(0)
                continue
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    if pending:
        log.error("%s not ready after %s s; demo not seeded", pending[0], timeout)
    return not pending


def seed(
    recognition_url: str, feedback_url: str, api_key: str, now: datetime | None = None
) -> None:
    """Post the demo org, its kudos and its survey rounds; safe to repeat."""
    rng = random.Random(7)
    now = now or datetime.now(UTC)
    people = build_people(rng)
    kudos = build_recognitions(rng, people, now)
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=recognition_url, headers=headers, timeout=30) as client:
        client.post("/v1/people/batch", json={"people": people}).raise_for_status()
        for start in range(0, len(kudos), 500):
            chunk = kudos[start : start + 500]
            client.post("/v1/recognitions/batch", json={"recognitions": chunk}).raise_for_status()
    with httpx.Client(base_url=feedback_url, headers=headers, timeout=30) as client:
        responses = surveys.post_rounds(client, rng, people, now)
    log.info("demo seeded: %d people in %d teams, %d recognitions over %d days, "
             "%d survey responses in %d rounds", len(people), len(TEAMS), len(kudos), DAYS,
             responses, len(surveys.ROUNDS))  # fmt: skip
