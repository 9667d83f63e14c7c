"""The services pick the partition of a key as aiokafka's default partitioner does
(murmur2, as Java's): every record of an event, whoever produced it, meets on one
partition."""

import random

from aiokafka.partitioner import DefaultPartitioner

from shared.infra.kafka import partition_for


def test_partition_for_agrees_with_aiokafka_on_every_key_and_partition_count() -> None:
    rng = random.Random(7)
    keys = [b"", b"a", b"ab", b"abc", "/rapport/recognition/hr:ü".encode()]
    keys += [rng.randbytes(rng.randrange(1, 120)) for _ in range(2000)]
    default = DefaultPartitioner()
    for n in (1, 2, 3, 6, 12, 64):
        every = list(range(n))
        assert [partition_for(k, n) for k in keys] == [default(k, every, every) for k in keys]
