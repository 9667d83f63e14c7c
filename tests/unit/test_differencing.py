"""The differencing guard against an automated attacker (ARCHITECTURE §7).

A reader of /metrics and the digest sees each team's trust figures for the 7d and 28d
windows ending on any day (kept, say, by Prometheus): sums of whole published rounds, so,
window after window, every published round (``published_rounds`` checks that each one can
be had that way). The attacker starts from there, with every round's sums and sizes,
answers and eNPS, and assumes the most it could: that respondents repeat their answers
from round to round and that a larger group holds a smaller one. Every combination of
rounds (each added, subtracted or left out) whose sizes come to exactly one respondent is
then that person's answers. Without the guard it finds the person of issue 30's example;
with it, nobody, while a team of 20 that answers every round sees every round, exact.
There is no trust figure across teams (nor any total) to combine them with.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from services.aggregator import rounds
from shared.contract.events import RoundClosed, TeamTrust
from shared.figures import trust as tr
from tests.support.surveys import T0, K, Table, response

Answers = dict[str, int]  # item -> score
Round = tuple[int, tuple[int, ...]]  # size, and a sum per item (or promoters, detractors)
ITEMS = ("direction", "growth")
LAST = (T0 + timedelta(days=60)).date()


def published_rounds(trust: TeamTrust, members: int) -> tuple[list[Round], list[Round]]:
    """Each published round's answers and eNPS, as a reader gets them from windows: the
    figure of a 7d window minus that of the window a day earlier is what entered it."""
    answers, enps = [], []
    for day in range(70):
        end = LAST - timedelta(day)
        now, before = (
            tr.figures(trust, tr.trailing(d, 7), members) for d in (end, end - timedelta(1))
        )
        if now is None:
            continue
        prev = (0, {i: 0.0 for i in ITEMS}) if before is None else (before.responses, before.scores)
        n = now.responses - prev[0]
        if n > 0:  # a round entered the window that day (no other left it: rounds are 4 days apart)
            sums = tuple(round(now.responses * now.scores[i] - prev[0] * prev[1][i]) for i in ITEMS)
            answers.append((n, sums))
    for block in trust.enps:
        enps.append((block.n, (block.promoters, block.detractors)))
    return answers[::-1], enps  # in time order


def one_person(rounds_: list[Round]) -> Iterator[tuple[int, ...]]:
    """The sums of every combination of rounds whose sizes come to exactly one."""
    for signs in itertools.product((1, -1, 0), repeat=len(rounds_)):
        if sum(s * n for s, (n, _) in zip(signs, rounds_, strict=True)) == 1:
            yield tuple(sum(s * sums[i] for s, (_, sums) in zip(signs, rounds_, strict=True))
                        for i in range(len(rounds_[0][1])))  # fmt: skip


def recovered(trust: TeamTrust, members: int, people: dict[int, Answers]) -> list[int]:
    """Respondents whose answer on some item one of the attacker's guesses gets to within
    0.5; on eNPS, whose promoter or detractor status it gets."""
    answers, enps = published_rounds(trust, members)
    found = set()
    for guess in one_person(answers):
        for who, a in people.items():
            if any(abs(g - a[i]) <= 0.5 for g, i in zip(guess, ITEMS, strict=True)):
                found.add(who)
    if any(True for _ in one_person(enps)):
        found.add(-1)  # someone's eNPS: promoter, passive or detractor
    return sorted(found)


def run(table: Table, rounds_of: list[dict[int, Answers]], enps: Callable[[int], int]) -> None:
    """Each round answered over a day, closed the next; one round every four days."""
    for r, answers in enumerate(rounds_of):
        at = T0 + timedelta(days=4 * r)
        for n, (who, a) in enumerate(sorted(answers.items())):
            table.apply(response(who, a["direction"], a["growth"], enps(who), survey=f"s{r}"),
                        at=at + timedelta(minutes=n))  # fmt: skip
        table.apply(RoundClosed(survey_id=f"s{r}"), at=at + timedelta(days=1))


@contextlib.contextmanager
def unguarded() -> Iterator[None]:
    """Publication as it was before the guard: every round of k or more."""

    def publish_all(state: Any, result: dict[str, Any], k: int) -> dict[str, Any]:
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rounds, "guarded", publish_all)
        yield


def issue_example(table: Table) -> dict[int, Answers]:
    """Round A: five people; round B: the same five with the same answers, plus a sixth."""
    five = {i: {"direction": 1 + i % 5, "growth": 5 - i % 4} for i in range(5)}
    sixth = {5: {"direction": 5, "growth": 1}}
    run(table, [five, {**five, **sixth}], lambda who: 10 if who == 5 else 7)
    return {**five, **sixth}


def test_the_attacker_finds_the_sixth_person_where_nothing_guards() -> None:
    table = Table()
    with unguarded():
        people = issue_example(table)
    assert [b.respondents for b in table.published().blocks] == [5, 6]
    assert 5 in recovered(table.published(), 6, people)


def test_with_the_guard_the_sixth_round_is_withheld_and_nobody_recovered() -> None:
    table = Table()
    people = issue_example(table)
    trust = table.published()
    assert [b.respondents for b in trust.blocks] == [5]  # B is never published
    assert [t.respondents for t in trust.surveys.values()] == [5]  # nor its turnout
    # What the attacker starts from is what a reader gets: each published round.
    [a] = trust.blocks
    assert published_rounds(trust, 6)[0] == [(5, tuple(a.dimensions[i].total for i in ITEMS))]
    assert recovered(trust, 6, people) == []


def test_nested_rounds_a_plus_b_plus_one_are_caught_too() -> None:
    """Rounds of 5 and 10 different people, then all of them and one more: the third
    round minus the first two is that one. Guarded, the third is withheld."""
    people = {i: {"direction": 1 + i % 5, "growth": 1 + (i * 3) % 5} for i in range(16)}
    groups = [dict(list(people.items())[:5]), dict(list(people.items())[5:15]), people]
    naive, guarded = Table(), Table()
    with unguarded():
        run(naive, groups, lambda who: 8)
    assert 15 in recovered(naive.published(), 16, people)
    run(guarded, groups, lambda who: 8)
    assert [b.respondents for b in guarded.published().blocks] == [5, 10]
    assert recovered(guarded.published(), 16, people) == []


def test_random_turnout_over_twelve_rounds_singles_nobody_out() -> None:
    """A team of twelve, each person drifting a little from round to round, a different
    subset answering each time (from k - 1 to all twelve)."""
    rng = random.Random(30)
    base = {i: {item: rng.randint(1, 5) for item in ITEMS} for i in range(12)}
    history = []
    for _ in range(12):
        who = rng.sample(range(12), rng.randint(K - 1, 12))
        history.append({i: {item: min(5, max(1, base[i][item] + rng.choice((-1, 0, 0, 1))))
                            for item in ITEMS} for i in who})  # fmt: skip
    table = Table()
    run(table, history, lambda who: rng.randint(0, 10))
    trust = table.published()
    assert 0 < len(trust.blocks) < 12  # some published, some withheld
    for round_ in history:  # against each round's real answers
        assert recovered(trust, 12, round_) == []


def test_a_team_of_twenty_that_answers_every_round_sees_every_round_exactly() -> None:
    rng = random.Random(20)
    history = [{i: {item: rng.randint(1, 5) for item in ITEMS} for i in range(20)}
               for _ in range(12)]  # fmt: skip
    table = Table()
    run(table, history, lambda who: rng.randint(0, 10))
    seen, _ = published_rounds(table.published(), 20)
    assert len(seen) == len(history)  # every round, as a reader gets it
    within = 0
    for (n, sums), answers in zip(seen, history, strict=True):
        exact = [sum(a[i] for a in answers.values()) / 20 for i in ITEMS]
        within += all(abs(total / n - e) <= 0.25 for total, e in zip(sums, exact, strict=True))
    assert within / len(history) >= 0.95


@pytest.mark.parametrize(
    ("published_sizes", "n", "risky"),
    [
        ([], 5, False),
        ([5], 6, True),  # five plus one
        ([5], 5, False),  # the same size: no one person in the difference
        ([5], 10, False),  # five more
        ([5], 9, True),  # 9 - 5 = 4 < k
        ([5, 10], 16, True),  # 16 - 10 - 5 = 1
        ([20, 20, 20], 20, False),
        ([20, 20], 18, True),
    ],
)
def test_differ_by_few(published_sizes: list[int], n: int, risky: bool) -> None:
    assert rounds.differ_by_few(published_sizes, n, K) is risky


def test_a_team_state_from_before_the_guard_is_guarded_by_its_published_rounds() -> None:
    legacy = rounds.new_state()
    del legacy["sizes"]
    legacy["results"] = [{"s": "a", "at": "2026-11-01T00:00:00+00:00", "respondents": 5,
                          "dimensions": {}, "enps": [5, 5, 0]}]  # fmt: skip
    six = {"s": "b", "at": "2026-11-08T00:00:00+00:00", "respondents": 6, "dimensions": {},
           "enps": None}  # fmt: skip
    assert rounds.guarded(legacy, six, K) is None
    ten = {**six, "respondents": 10, "enps": [6, 1, 1]}
    assert rounds.guarded(legacy, ten, K) == {**ten, "enps": None}  # 6 scores beside 5
    assert rounds.add_result(legacy, ten)["sizes"] == [[5, 5], [10, 6]]
