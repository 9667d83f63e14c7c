"""The services' partitioner picks the partition aiokafka's default one does (murmur2, as
Java's): every record of an event, whoever produced it, meets on one partition."""

import random

from aiokafka.partitioner import DefaultPartitioner

from shared.kafka import partition_for, partitioner


def test_partition_for_agrees_with_aiokafka_on_every_key_and_partition_count() -> None:
    rng = random.Random(7)
    keys = [b"", b"a", b"ab", b"abc", "/rapport/recognition/hr:ü".encode()]
    keys += [rng.randbytes(rng.randrange(1, 120)) for _ in range(2000)]
    default = DefaultPartitioner()
    for n in (1, 2, 3, 6, 12, 64):
        every = list(range(n))
        assert [partition_for(k, n) for k in keys] == [default(k, every, every) for k in keys]
        assert [partitioner(k, every, every) for k in keys] == [partition_for(k, n) for k in keys]


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert {partitioner(None, [0, 1, 2, 3], [2]) for _ in range(50)} == {2}
    assert {partitioner(None, [0, 1], []) for _ in range(200)} == {0, 1}
