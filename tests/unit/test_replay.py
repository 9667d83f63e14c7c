"""What a replay carries over from the survey table, and where each key goes."""

from __future__ import annotations

from services.aggregator.replay import carried_of


def test_closed_rounds_are_carried_as_closed_before_the_replay_and_teams_stay_on_theirs() -> None:
    team_partition = {"alpha": 3, "beta": 1}.__getitem__
    assert carried_of("#closed|2", team_partition) == ("#carried|2", 2)
    assert carried_of("#carried|0", team_partition) == ("#carried|0", 0)  # a replay's replay
    assert carried_of("alpha", team_partition) == ("alpha", 3)  # its closed rounds' sums
    assert carried_of("beta#comments|s1", team_partition) == ("beta#comments|s1", 1)
