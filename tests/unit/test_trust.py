"""Trust aggregation and figures against hand-computed values, and the privacy rules."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.aggregator import trust
from shared import trust as tr
from shared.events import SelfAssessed, SurveyResponded, TeamTrust
from shared.settings import Settings

K = 5
DIMS = {"direction": "direction", "growth": "growth"}
T0 = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # a Monday: ISO week 2026-W47
WEEK = tr.iso_week("2026-W47")


def who(i: int) -> str:
    return f"{i:032x}"


def response(
    i: int, direction: int, growth: int, enps: int | None = None, *, survey: str = "s1",
    comment: str | None = None,
) -> SurveyResponded:  # fmt: skip
    return SurveyResponded(survey_id=survey, respondent=who(i), team_id="t",
                           answers={"direction": direction, "growth": growth},
                           enps=enps, comment=comment)  # fmt: skip


def feed(state: Any, responses: list[SurveyResponded], start: int = 0) -> Any:
    for n, r in enumerate(responses, start):
        state = trust.respond(state, r, f"e{n}", T0 + timedelta(minutes=n), K) or state
    return state


def published(state: Any, ck: int = K) -> TeamTrust:
    return trust.team_trust(state, DIMS, K, ck)


HAND = [(5, 2, 10), (4, 3, 9), (3, 4, 7), (2, 5, 6), (4, 1, 9)]


def test_figures_match_hand_computed_values() -> None:
    state = feed(None, [response(i, d, g, e) for i, (d, g, e) in enumerate(HAND)])
    predicted = SelfAssessed(survey_id="s1", leader_id="lee", team_id="t",
                             predicted={"direction": 5, "growth": 4})  # fmt: skip
    state = trust.assess(state, predicted, "a1", T0)
    f = tr.figures(published(state), WEEK, members=8)
    assert f is not None
    assert f.responses == 5
    # direction 5,4,3,2,4: mean 18/5, favorable 3 of 5; growth 2,3,4,5,1: mean 3, 2 of 5.
    assert f.scores == pytest.approx({"direction": 3.6, "growth": 3.0})
    assert f.favorable == pytest.approx({"direction": 0.6, "growth": 0.4})
    assert f.index == pytest.approx(50.0)  # 100 x mean(0.6, 0.4)
    assert f.enps == pytest.approx(40.0)  # promoters 10,9,9; detractor 6: (3 - 1) / 5
    assert f.participation == pytest.approx(5 / 8)
    assert f.gap == pytest.approx({"direction": 1.4, "growth": 1.0})  # 5 - 3.6, 4 - 3


def test_below_k_respondents_nothing_is_published_and_the_kth_publishes() -> None:
    state = feed(None, [response(i, d, g, e) for i, (d, g, e) in enumerate(HAND[:4])])
    assert published(state) == TeamTrust()  # not even the survey's turnout
    assert tr.figures(published(state), WEEK, members=8) is None
    state = feed(state, [response(4, *HAND[4])], start=4)
    assert len(published(state).blocks) == 1
    assert published(state).surveys["s1"].respondents == 5


def test_figures_change_only_in_steps_of_k_respondents() -> None:
    """The differencing guard: a 6th to 9th answer cannot be read off a changed figure."""
    rng = random.Random(3)
    state, seen = None, []
    for i in range(23):
        r = response(i, rng.randint(1, 5), rng.randint(1, 5), rng.randint(0, 10))
        state = feed(state, [r], start=i)
        f = tr.figures(published(state), WEEK, members=30)
        seen.append(f)
        if i + 1 < K:
            assert f is None
        else:
            assert f is not None and f.responses == (i + 1) // K * K
    versions = [f for f, _ in itertools.groupby(seen)]
    assert [v.responses for v in versions if v] == [5, 10, 15, 20]


def test_any_two_windows_differ_by_zero_or_at_least_k_respondents() -> None:
    rng = random.Random(11)
    state = None
    for i in range(60):  # answers spread over three weeks, some people answer twice
        r = response(rng.randrange(25), rng.randint(1, 5), rng.randint(1, 5),
                     survey=f"s{i // 20}")  # fmt: skip
        state = trust.respond(state, r, f"e{i}", T0 + timedelta(hours=8 * i), K) or state
    assert state is not None
    units = state["units"]
    complete = [b for b in state["blocks"]["trust"] if len(b) == K]
    assert len(complete) >= 8
    assert all(len({units[u]["r"] for u in b}) == K for b in complete)  # K distinct people
    assert len({u for b in complete for u in b}) == K * len(complete)  # no unit twice
    assert [b.at for b in published(state).blocks] == sorted(
        datetime.fromisoformat(max(units[u]["t"] for u in b)) for b in complete
    )
    windows = [tr.trailing(date(2026, 11, d), n) for d in range(16, 31) for n in (7, 28)]
    windows += [tr.iso_week(f"2026-W{w}") for w in (47, 48, 49)]

    def members(w: tr.Window) -> set[str]:
        at = {u: datetime.fromisoformat(max(units[x]["t"] for x in b)) for b in complete for u in b}
        return {u for u, t in at.items() if w.start <= t < w.end}

    differences = {len(members(a) ^ members(b)) for a, b in itertools.combinations(windows, 2)}
    assert differences - {0}, "the windows should not all be alike"
    assert min(differences - {0}) >= K


def test_a_block_never_holds_one_respondent_twice() -> None:
    # Person 0 answers two surveys before anyone else answers: two blocks, not one.
    rs = [response(0, 5, 5, survey="s1"), response(0, 1, 1, survey="s2")]
    rs += [response(i, 3, 3, survey="s1") for i in range(1, 5)]
    state = feed(None, rs)
    [block] = published(state).blocks
    assert block.dimensions["direction"].total == 5 + 3 * 4  # person 0's first answer only
    assert len(state["blocks"]["trust"]) == 2


def test_resubmission_replaces_and_redelivery_changes_nothing() -> None:
    state = feed(None, [response(i, 3, 3) for i in range(5)])
    later = T0 + timedelta(hours=1)
    changed = trust.respond(state, response(0, 5, 5), "again", later, K)
    assert changed is not None
    [block] = published(changed).blocks
    assert block.respondents == 5  # still five people, not six
    assert block.dimensions["direction"].total == 3 * 4 + 5
    assert trust.respond(changed, response(0, 5, 5), "again", later, K) is None  # redelivery
    assert trust.respond(changed, response(0, 1, 1), "old", T0, K) is None  # older answer


def test_enps_and_comments_need_their_own_k() -> None:
    rs = [response(i, 4, 4, enps=9 if i < 4 else None, comment=f"note {i}" if i < 3 else None)
          for i in range(5)]  # fmt: skip
    state = feed(None, rs)
    f = tr.figures(published(state), WEEK, members=7)
    assert f is not None and f.enps is None  # four scores: not enough
    assert published(state).comments == ()  # three comments: not enough
    state = feed(state, [response(i, 4, 4, enps=0, comment=f"note {i}") for i in (5, 6)], 5)
    f = tr.figures(published(state), WEEK, members=7)
    assert f is not None and f.enps == pytest.approx(60.0)  # 9,9,9,9,0: (4 - 1) / 5
    [block] = published(state).comments
    assert sorted(block.comments) == ["note 0", "note 1", "note 2", "note 5", "note 6"]


def test_comments_are_ordered_independently_of_submission() -> None:
    texts = [f"comment number {i}" for i in range(5)]
    forward = published(feed(None, [response(i, 3, 3, comment=t) for i, t in enumerate(texts)]))
    backward = published(
        feed(None, [response(i, 3, 3, comment=t) for i, t in reversed(list(enumerate(texts)))])
    )
    assert forward.comments[0].comments == backward.comments[0].comments


def test_prune_forgets_old_blocks_whole() -> None:
    state = feed(None, [response(i, 3, 3) for i in range(7)])  # one block and two open
    trust.prune(state, T0 + trust.RETENTION + timedelta(days=1))
    assert state["units"] == {} and state["blocks"] == {k: [] for k in trust.KINDS}


def test_iso_week_and_trailing_windows() -> None:
    assert tr.iso_week("2026-W47") == tr.Window(
        T0.replace(hour=0), T0.replace(hour=0) + timedelta(7)
    )
    w = tr.trailing(date(2026, 11, 22), 7)
    assert (w.start, w.end) == (
        datetime(2026, 11, 16, tzinfo=UTC),
        datetime(2026, 11, 23, tzinfo=UTC),
    )


@pytest.mark.parametrize("name", ["RAPPORT_ANONYMITY_K", "RAPPORT_COMMENT_K"])
def test_thresholds_can_never_be_set_below_3(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "2")
    with pytest.raises(ValidationError, match="greater than or equal to 3"):
        Settings()
    monkeypatch.setenv(name, "3")
    assert Settings().anonymity_k + Settings().comment_k == 3 + 5
