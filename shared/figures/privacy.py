"""Which teams may have figures published: the minimum group and its complement.

A team with fewer than k active members has no figure of any kind (ARCHITECTURE §7).
Hiding it is not enough where a total can be read beside the teams (the aggregator's
and the services' counters on /metrics count every event of the organisation): the total
minus the published teams is the hidden teams together. So when the hidden teams hold
fewer than k people between them (and more than none), the smallest published teams are
hidden too until they hold at least k (complementary suppression, as Peakon's overlap
guard does). Every reader, /metrics and the digest alike, uses this one rule, so no two
readers' figures can be subtracted either.
"""

from __future__ import annotations

from collections.abc import Mapping


def published(sizes: Mapping[str, int], k: int) -> frozenset[str]:
    """The teams whose figures may be published, from each team's active members."""
    shown = sorted((n, team) for team, n in sizes.items() if n >= k)
    hidden = sum(n for n in sizes.values() if n < k)
    while 0 < hidden < k and shown:
        n, _ = shown.pop(0)  # the smallest, then the first by id
        hidden += n
    return frozenset(team for _, team in shown)
