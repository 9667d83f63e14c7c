"""The survey stage's table (team-trust): what each survey-topic event changes in it.

Keys, each record small whatever one team sends (ARCHITECTURE §7, issue: bounded state):
- ``{team}``: the team's closed-round results and leader predictions (``rounds.State``)
- ``{team}|{survey}|{respondent}``: one answer to a round still open (``rounds.Unit``),
  sealed as it came: opened only when the round closes, with its response key
  (``ResponseKeys``); one whose key is gone by then (its respondent erased) is not counted
- ``{team}#comments|{survey}``: the comments published with a closed round
- ``#closed|{partition}``: the rounds closed on that partition, and when
- ``#carried|{partition}``: the rounds closed there before a replay built this table
  (``replay``): their results were carried over, and their answers still on the survey
  topic are not counted again

Every key is written to the partition of the event that changed it, so table, changelog
and the team's events stay co-partitioned; ``#closed|p`` lives on partition p.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Callable, MutableMapping
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError

from shared.contract.codec import CloudEvent
from shared.contract.events import (
    Answers,
    ResponseWithdrawn,
    RoundClosed,
    SelfAssessed,
    SurveyResponded,
    TeamTrust,
)
from shared.infra.sealing import SealingError
from shared.readmodels.questions import Catalogue

from . import rounds

log = logging.getLogger(__name__)
Update = tuple[str, Any]  # a key and its new value; None deletes it
MAX_CLOSED = 200  # rounds remembered as closed per partition (answers to them refused)


class Opener(Protocol):
    """What opens sealed answers (``shared.infra.subjects.ResponseKeys``)."""

    def open(self, sealed: str, survey_id: str, respondent: str) -> Answers | None: ...


class RoundIsClosed(ValueError):
    """An answer reached the log after its round closed: it is not counted."""


def unit_key(team_id: str, survey_id: str, respondent: str) -> str:
    return f"{team_id}|{survey_id}|{respondent}"


def comments_key(team_id: str, survey_id: str) -> str:
    return f"{team_id}#comments|{survey_id}"


def closed_key(partition: int) -> str:
    return f"#closed|{partition}"


def carried_key(partition: int) -> str:
    return f"#carried|{partition}"


def is_team_key(key: str) -> bool:
    return "|" not in key and "#" not in key


class Surveys:
    """Applies survey events to the team-trust table's data, keeping an index of the
    open rounds' answers by round and team (rebuilt from the table after recovery)."""

    def __init__(
        self,
        data: MutableMapping[str, Any],
        questions: Catalogue,
        k: int,
        ck: int,
        responses: Opener,
    ) -> None:
        self.data = data
        self._questions, self._responses = questions, responses
        self._dimension_of = questions.dimension_of
        self._k, self._ck = k, ck
        self._open: defaultdict[str, defaultdict[str, set[str]]] = defaultdict(
            lambda: defaultdict(set)
        )  # survey -> team -> unit keys

    def rebuild(self) -> None:
        """Index the open rounds' answers again: the table was re-read from its changelog."""
        self._open.clear()
        for key in list(self.data.keys()):
            if "#" not in key and key.count("|") == 2:
                team_id, survey_id, _ = key.split("|")
                self._open[survey_id][team_id].add(key)

    def teams(self) -> list[str]:
        return [key for key in list(self.data) if is_team_key(key)]

    def team_trust(self, team_id: str) -> TeamTrust:
        state = self.data.get(team_id)
        surveys = [r["s"] for r in state["results"]] if state else []
        comments = {s: self.data.get(comments_key(team_id, s)) or [] for s in surveys}
        return rounds.team_trust(state, comments)

    def changes(
        self,
        ce: CloudEvent,
        item: SurveyResponded | SelfAssessed | RoundClosed | ResponseWithdrawn,
        partition: int,
        partition_of: Callable[[str], int],
    ) -> tuple[list[Update], set[str]]:
        """The table updates one event makes, and the teams whose published figures move.

        Raise ``RoundIsClosed`` for an answer behind its round's close on this partition.
        """
        event_id = f"{ce.source} {ce.id}"
        if isinstance(item, RoundClosed):
            return self._close(item.survey_id, ce.time, partition, partition_of)
        if isinstance(item, ResponseWithdrawn):  # its respondent was erased; after the
            # close, nothing is left to withdraw (and nothing links the answers to them)
            key = unit_key(item.team_id, item.survey_id, item.respondent)
            return ([(key, None)], set()) if key in self.data else ([], set())
        closed = self.data.get(closed_key(partition)) or {}
        carried = self.data.get(carried_key(partition)) or {}
        if item.survey_id in carried and item.survey_id not in closed:
            return [], set()  # counted in a result carried over by a replay
        if item.survey_id in closed:
            raise RoundIsClosed(f"round {item.survey_id!r} closed before this reached the log")
        if isinstance(item, SelfAssessed):
            state = copy.deepcopy(self.data.get(item.team_id))
            assessed = rounds.assess(state, item, event_id, ce.time)
            if assessed is None:
                return [], set()
            return self._team(item.team_id, assessed, ce.time), {item.team_id}
        key = unit_key(item.team_id, item.survey_id, item.respondent)
        unit = rounds.respond(self.data.get(key), item, event_id, ce.time)
        # Nothing published moves while the round is open: no team to republish.
        return ([(key, unit)], set()) if unit is not None else ([], set())

    def _close(
        self, survey_id: str, when: datetime, partition: int, partition_of: Callable[[str], int]
    ) -> tuple[list[Update], set[str]]:
        closed = dict(self.data.get(closed_key(partition)) or {})
        if survey_id in closed:
            return [], set()  # a redelivered marker
        closed[survey_id] = when.isoformat()
        kept = dict(sorted(closed.items(), key=lambda c: (c[1], c[0]))[-MAX_CLOSED:])
        updates: list[Update] = [(closed_key(partition), kept)]
        moved = set()
        for team_id, keys in sorted(self._open.get(survey_id, {}).items()):
            if partition_of(team_id) != partition:
                continue
            units = [u for k in sorted(keys) if (u := self._opened(k)) is not None]
            updates += [(k, None) for k in sorted(keys)]  # raw answers go at closing
            closing = rounds.close(units, survey_id, self._dimension_of, self._k, self._ck)
            if closing is None:
                continue  # fewer than k respondents: nothing is ever published
            before = self.data.get(team_id)
            result = rounds.guarded(before, closing[0], self._k)
            if result is None:
                log.info("round %r of team %r withheld: its %d respondents beside the team's "
                         "published rounds would single someone out", survey_id, team_id,
                         closing[0]["respondents"])  # fmt: skip
                continue
            if comments := closing[1]:
                updates.append((comments_key(team_id, survey_id), comments))
            state = rounds.add_result(copy.deepcopy(before), result)
            updates += self._team(team_id, state, when)
            moved.add(team_id)
        return updates, moved

    def _opened(self, key: str) -> rounds.Unit | None:
        """The unit at ``key`` with its answers open; ``None`` (not counted) if they cannot
        be: their key is gone (the respondent was erased), or they do not open."""
        unit: rounds.Unit = self.data[key]
        if "x" not in unit:
            return unit
        _, survey_id, respondent = key.split("|")
        try:
            answers = self._responses.open(unit["x"], survey_id, respondent)
            if answers is not None:
                self._questions.check_answers(answers.answers)
        except (SealingError, ValidationError, ValueError) as exc:
            log.warning("an answer to round %r not counted: %s", survey_id, exc)
            return None
        return None if answers is None else rounds.opened(unit, answers)

    def _team(self, team_id: str, state: rounds.State, when: datetime) -> list[Update]:
        """A team's new state, pruned as of ``when`` (event time: a replay prunes alike)."""
        gone = rounds.prune(state, when)
        return [(team_id, state)] + [(comments_key(team_id, s), None) for s in gone]

    def commit(self, updates: list[Update]) -> None:
        """Apply updates to the table's data and the index of open answers."""
        for key, value in updates:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
            if "#" not in key and key.count("|") == 2:
                team_id, survey_id, _ = key.split("|")
                keys = self._open[survey_id][team_id]
                (keys.discard if value is None else keys.add)(key)
                if not keys:
                    del self._open[survey_id][team_id]
                    if not self._open[survey_id]:
                        del self._open[survey_id]
