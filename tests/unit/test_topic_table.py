"""The README's topic table names every topic Rapport creates, the internal ones too; a
generation of the aggregator's topics (``rapport replay``) names its own."""

from __future__ import annotations

from shared.contract.topics import (
    AGGREGATOR_APP_ID,
    DIRECTORY,
    EVENTS,
    GENERATIONS,
    RECOGNITION,
    SNAPSHOTS,
    SUBJECT_KEYS,
    SURVEY,
    TEAM_FACTS,
    Generation,
    all_topics,
    dlq,
)
from shared.infra.settings import Settings
from tests.support import ROOT


def test_the_readme_lists_every_topic() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| topic | partitions |") :].split("\n\n", 1)[0]
    rows = {line.split("|")[1] for line in table.splitlines()[2:]}
    listed = {name.strip(" `") for row in rows for name in row.split(",")}
    assert {t.name for t in all_topics(Settings())} == listed


def test_a_generation_names_the_aggregators_topics_and_shares_the_rest() -> None:
    first, second = Generation(), Generation(2)
    assert (first.app_id, first.team_facts, first.snapshots) == (
        AGGREGATOR_APP_ID,
        TEAM_FACTS,
        SNAPSHOTS,
    )  # the names from before generations
    assert second.changelog("team-days") == "rapport-aggregator-g2-team-days-changelog"
    assert second.of(dlq(TEAM_FACTS)) == "rapport.aggregator.team-facts.v1.g2.dlq"
    for topic in (TEAM_FACTS, dlq(TEAM_FACTS), EVENTS, SNAPSHOTS, RECOGNITION, SURVEY):
        assert second.logical(second.of(topic)) == topic
    assert second.of(RECOGNITION) == RECOGNITION and second.of(SURVEY) == SURVEY  # sources
    ones, twos = ({t.name for t in all_topics(Settings(), g)} for g in (first, second))
    shared = ones & twos
    assert {RECOGNITION, SURVEY, DIRECTORY, GENERATIONS, SUBJECT_KEYS} <= shared
    assert twos - shared == {
        second.of(t) for t in (TEAM_FACTS, dlq(TEAM_FACTS), EVENTS, SNAPSHOTS)
    } | {second.changelog(t) for t in ("team-days", "team-trust", "event-ids")} | {
        "rapport-aggregator-g2-__assignor-__leader"
    }
