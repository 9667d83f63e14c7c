"""Survey rounds: nothing published while open, whole rounds of k or more once closed."""

from __future__ import annotations

import asyncio
import itertools
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from services.aggregator import rounds
from services.aggregator.settings import AggregatorSettings
from services.aggregator.surveys import RoundIsClosed, carried_key, closed_key
from shared.contract.codec import CloudEvent
from shared.contract.events import (
    ROUND_CLOSED,
    SURVEY_RESPONSE,
    Answers,
    ResponseWithdrawn,
    RoundClosed,
    SelfAssessed,
    SurveyResponded,
    TeamTrust,
)
from shared.figures import trust as tr
from shared.infra.settings import SealingSettings
from shared.infra.subjects import ResponseKeys
from tests.support.surveys import T0, WEEK, K, Table, response, who

HAND = [(5, 2, 10), (4, 3, 9), (3, 4, 7), (2, 5, 6), (4, 1, 9)]


def test_figures_match_hand_computed_values() -> None:
    table = Table()
    table.feed([response(i, d, g, e) for i, (d, g, e) in enumerate(HAND)])
    predicted = SelfAssessed(survey_id="s1", leader_id="lee", team_id="t",
                             predicted={"direction": 5, "growth": 4})  # fmt: skip
    assert table.apply(predicted) == {"t"}
    assert table.close() == {"t"}
    f = tr.figures(table.published(), WEEK, members=8)
    assert f is not None
    assert f.responses == 5
    # direction 5,4,3,2,4: mean 18/5, favorable 3 of 5; growth 2,3,4,5,1: mean 3, 2 of 5.
    assert f.scores == pytest.approx({"direction": 3.6, "growth": 3.0})
    assert f.favorable == pytest.approx({"direction": 0.6, "growth": 0.4})
    assert f.index == pytest.approx(50.0)  # 100 x mean(0.6, 0.4)
    assert f.enps == pytest.approx(40.0)  # promoters 10,9,9; detractor 6: (3 - 1) / 5
    assert f.participation == pytest.approx(5 / 8)
    assert f.gap == pytest.approx({"direction": 1.4, "growth": 1.0})  # 5 - 3.6, 4 - 3


def test_nothing_is_published_while_a_round_is_open() -> None:
    table = Table()
    for i in range(3 * K):  # however many answer, and however often
        assert table.apply(response(i % (K + 2), 1 + i % 5, 5 - i % 5)) == set()
        assert table.published() == TeamTrust()
    assert table.close() == {"t"}
    [block] = table.published().blocks
    assert block.respondents == K + 2  # each respondent once: their latest answer


def test_below_k_respondents_a_closed_round_publishes_nothing_and_keeps_no_answer() -> None:
    table = Table()
    table.feed([response(i, 4, 4, 9, comment=f"c{i}") for i in range(K - 1)])
    assert table.close() == set()
    assert table.published() == TeamTrust()
    assert set(table.data) == {closed_key(0)}  # the raw answers are gone with the round


def test_a_closed_round_never_changes() -> None:
    table = Table()
    table.feed([response(i, 2, 2) for i in range(K)])
    table.close()
    before = table.published()
    for attack in ([response(0, 5, 5)], [response(K + i, 5, 5) for i in range(K)]):
        for r in attack:  # resubmitting, or new respondents, after the close
            with pytest.raises(RoundIsClosed):
                table.apply(r)
    assert table.close() == set()  # a redelivered marker changes nothing either
    assert table.published() == before


def test_resubmission_replaces_and_redelivery_changes_nothing() -> None:
    table = Table()
    table.feed([response(i, 2, 2) for i in range(K)])
    ce = CloudEvent("again", "/test", SURVEY_RESPONSE, T0 + timedelta(hours=1), {})
    changed, _ = table.surveys.changes(ce, response(0, 5, 5), 0, lambda t: 0)
    table.surveys.commit(changed)
    redelivered, _ = table.surveys.changes(ce, response(0, 1, 1), 0, lambda t: 0)
    assert redelivered == []  # the same event id: nothing
    older = CloudEvent("old", "/test", SURVEY_RESPONSE, T0 - timedelta(hours=1), {})
    assert table.surveys.changes(older, response(0, 1, 1), 0, lambda t: 0)[0] == []
    table.close()
    [block] = table.published().blocks
    assert block.dimensions["growth"].total == 5 + 2 * (K - 1)


def test_a_withdrawn_answer_never_counts_and_leaves_the_table() -> None:
    """An erased respondent's answer to an open round (services.recognition: erase)."""
    table = Table()
    table.feed([response(i, 4, 4, comment=f"note {i}") for i in range(K + 1)])
    withdrawn = ResponseWithdrawn(survey_id="s1", respondent=who(0), team_id="t")
    assert table.apply(withdrawn) == set()  # nothing published moves while it is open
    assert not [k for k in table.data if k.endswith(who(0))]
    table.apply(withdrawn)  # again, or for someone who never answered: nothing
    table.close()
    [block] = table.published().blocks
    [comments] = table.published().comments
    assert block.respondents == K and "note 0" not in comments.comments
    assert table.apply(withdrawn) == set()  # after the close: nothing left to withdraw


def test_answers_to_a_round_carried_over_by_a_replay_are_not_counted_again() -> None:
    table = Table()
    table.data[carried_key(0)] = {"s1": T0.isoformat()}  # its result was carried over
    table.feed([response(i, 4, 4) for i in range(K)])  # its answers, read again
    assert not [k for k in table.data if k.count("|") == 2]
    assert table.close() == set() and table.published() == TeamTrust()
    with pytest.raises(RoundIsClosed):  # an answer behind its close: late, as ever
        table.apply(response(9, 4, 4))
    table.feed([response(i, 4, 4, survey="s2") for i in range(K)])  # another round: counted
    assert table.close("s2") == {"t"}


def test_a_round_closes_only_the_teams_of_its_partition() -> None:
    table = Table()
    table.feed([response(i, 4, 4, team=team) for team in ("t", "u") for i in range(K)])
    partitions = {"t": 0, "u": 1}
    ce = CloudEvent("c", "/test", ROUND_CLOSED, T0 + timedelta(days=1), {})
    updates, moved = table.surveys.changes(ce, RoundClosed(survey_id="s1"), 0, partitions.get)
    table.surveys.commit(updates)
    assert moved == {"t"} and table.published("u") == TeamTrust()
    with pytest.raises(RoundIsClosed):  # on partition 0 the round is over...
        table.apply(response(9, 4, 4))
    table.apply(response(9, 4, 4, team="u"), partition=1)  # ...on partition 1 not yet


def test_enps_and_comments_need_their_own_k_and_comments_are_a_shuffled_sample() -> None:
    table = Table(ck=3)
    table.feed([response(i, 4, 4, 9 if i < K - 1 else None,
                         comment=f"note {i}" if i < 2 else None) for i in range(K)])  # fmt: skip
    table.close()
    published = table.published()
    assert published.enps == () and published.comments == ()  # 4 scores, 2 comments
    table.feed([response(i, 4, 4, comment=f"note {i}", survey="s2") for i in range(80)])
    table.close("s2")
    [comments] = table.published().comments
    assert len(comments.comments) == rounds.MAX_COMMENTS
    assert list(comments.comments) != sorted(comments.comments, key=lambda c: int(c[5:]))


def test_any_two_windows_differ_by_zero_or_at_least_k_respondents() -> None:
    rng = random.Random(11)
    table = Table()
    rounds = {}
    for r in range(6):  # rounds over three weeks, each closed by its marker
        at = T0 + timedelta(days=4 * r)
        for i in range(rng.randrange(K - 1, 12)):
            table.apply(response(i, rng.randint(1, 5), rng.randint(1, 5), survey=f"s{r}"),
                        at=at + timedelta(minutes=i))  # fmt: skip
        table.apply(RoundClosed(survey_id=f"s{r}"), at=at + timedelta(days=1))
        rounds[f"s{r}"] = at
    blocks = table.published().blocks
    assert len(blocks) >= 2 and all(b.respondents >= K for b in blocks)
    windows = [tr.trailing(date(2026, 11, d), n) for d in range(16, 31) for n in (7, 28)]
    windows += [tr.iso_week(f"2026-W{w}") for w in (47, 48, 49)]

    def inside(w: tr.Window) -> set[int]:
        return {n for n, b in enumerate(blocks) if w.start <= b.at < w.end}

    differences = {
        sum(blocks[n].respondents for n in inside(a) ^ inside(b))  # answers in one, not both
        for a, b in itertools.combinations(windows, 2)
    }
    assert differences - {0}, "the windows should not all be alike"
    assert min(differences - {0}) >= K


def test_old_rounds_go_whole_with_their_comments() -> None:
    table = Table(ck=3)
    for r in range(rounds.MAX_RESULTS + 2):
        table.feed([response(i, 4, 4, comment=f"{r}/{i}", survey=f"s{r}") for i in range(K)])
        table.close(f"s{r}")
    published = table.published()
    assert len(published.blocks) == len(published.comments) == rounds.MAX_RESULTS
    assert "t#comments|s0" not in table.data and "t#comments|s2" in table.data


def test_no_record_grows_with_the_team_or_its_rounds() -> None:
    table = Table()
    long = "\U0001f600" * 995  # four bytes a character in UTF-8
    for r in range(rounds.MAX_RESULTS + 3):
        table.feed([response(i, 4, 4, 9, comment=f"{i}{long}", survey=f"s{r}")
                    for i in range(300)])  # fmt: skip
        answers = [len(orjson.dumps(v)) for k, v in table.data.items() if k.count("|") == 2]
        assert len(answers) == 300 and max(answers) < 8_000  # one small record an answer
        table.close(f"s{r}")
    sizes = {k: len(orjson.dumps(v)) for k, v in table.data.items()}
    assert max(sizes.values()) < 250_000  # 50 comments of 4 kB at most, far under 1 MB


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
        AggregatorSettings()
    monkeypatch.setenv(name, "3")
    assert AggregatorSettings().anonymity_k + AggregatorSettings().comment_k == 3 + 5


def test_sealed_answers_stay_sealed_until_the_close_and_an_erased_ones_never_count(
    tmp_path: Path,
) -> None:
    keys = ResponseKeys(SealingSettings(var_dir=tmp_path))  # files: no broker needed

    def sealed(i: int, score: int, *, survey: str = "s1", sealed_as: str | None = None) -> Any:
        answers = Answers(answers={"direction": score, "growth": score}, enps=9,
                          comment=f"comment of {i}")  # fmt: skip
        text = asyncio.run(keys.seal(answers, survey, sealed_as or who(i), None))  # type: ignore[arg-type]
        return SurveyResponded(survey_id=survey, respondent=who(i), team_id="t",
                               sealed_answers=text)  # fmt: skip

    table = Table(responses=keys)
    table.feed([sealed(i, 4) for i in range(6)])
    table.apply(sealed(6, 1, sealed_as=who(7)))  # sealed for someone else: does not open
    assert b"comment of" not in orjson.dumps(table.data)  # the table holds them sealed
    assert table.published() == TeamTrust()
    assert asyncio.run(keys.erase(who(5), publisher=None)) == 1  # type: ignore[arg-type]
    assert table.close() == {"t"}
    [block] = table.published().blocks
    assert block.respondents == 5  # 0 to 4: 5 erased, 6 not opened
    assert block.dimensions["direction"].total == 20
    [comments] = table.published().comments
    assert sorted(comments.comments) == [f"comment of {i}" for i in range(5)]
    assert not [k for k in table.data if k.count("|") == 2]  # every unit gone at the close


def test_a_response_is_sealed_or_plain_never_both_nor_neither() -> None:
    base = {"survey_id": "s1", "respondent": who(1), "team_id": "t"}
    assert SurveyResponded(**base, sealed_answers="s1.x.y.z").answers is None
    with pytest.raises(ValidationError, match="either answers or sealed_answers"):
        SurveyResponded(**base)
    with pytest.raises(ValidationError, match="not beside"):
        SurveyResponded(**base, sealed_answers="s1.x.y.z", comment="plain")
