"""Organisations to seed a directory with."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.contract.events import Person


def person(
    pid: str,
    team: str,
    manager: str | None = None,
    *,
    name: str | None = None,
    email: str | None = None,
    **fields: Any,
) -> Person:
    """``pid`` in ``team``, named "<Pid> Person" at <pid>@x.io unless told otherwise."""
    return Person(id=pid, name=name or f"{pid.title()} Person", email=email or f"{pid}@x.io",
                  team_id=team, manager_id=manager, **fields)  # fmt: skip


def team(team_id: str, lead: str, members: Iterable[str], **fields: Any) -> list[Person]:
    """A lead and the members who report to them."""
    return [person(lead, team_id, **fields), *(person(m, team_id, lead, **fields) for m in members)]


def spread(people: int, teams: int, prefix: str = "u") -> list[Person]:
    """``people`` people (u0, u1, ...) dealt in turn over ``teams`` teams (team-0, ...)."""
    return [person(f"{prefix}{i}", f"team-{i % teams}") for i in range(people)]


def as_json(people: Iterable[Person]) -> list[dict[str, Any]]:
    """As a directory client posts them."""
    return [p.model_dump(mode="json") for p in people]
