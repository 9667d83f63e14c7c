"""Subject keys on a real broker: one per person across replicas, gone when erased."""

from __future__ import annotations

import asyncio

from shared.contract import topics
from shared.infra.kafka import Publisher
from shared.infra.sealing import LocalMasterKey, new_data_key, seal, unseal
from shared.infra.settings import Settings
from shared.infra.subjects import RELOOK_S, SubjectKeys
from tests.support.kafka import read_all


async def scenario(settings: Settings) -> None:
    master = LocalMasterKey(new_data_key())
    publisher = Publisher(settings)
    one, two = SubjectKeys(settings, master), SubjectKeys(settings, master)
    await publisher.start()
    await one.start()
    await two.start()
    try:
        made = await one.ensure(["ann", "bob"], publisher)
        assert set(made) == {"ann", "bob"} and made["ann"] != made["bob"]
        assert await one.ensure(["bob", "ann"], publisher) == made  # kept, not made again
        await two.sync()
        assert {p: two.subject_of(p) for p in made} == made  # another replica agrees
        # Two replicas giving one new person a key at the same moment agree on one.
        first, second = await asyncio.gather(one.ensure(["cid"], publisher),
                                             two.ensure(["cid"], publisher))  # fmt: skip
        await one.sync()
        await two.sync()
        assert first == second == {"cid": one.subject_of("cid")} == {"cid": two.subject_of("cid")}

        keys = {made[p]: one.key(made[p]) for p in ("ann", "bob")}
        assert all(keys.values())
        sealed = seal("Thanks, Bob!", {s: k for s, k in keys.items() if k}, "ctx")
        assert unseal(sealed, two.key, "ctx") == "Thanks, Bob!"

        assert await one.erase("bob", publisher=publisher) >= 1
        assert one.subject_of("bob") is None and unseal(sealed, one.key, "ctx") is None
        # Another replica: once it has read the tombstone, or (beside the embedded broker)
        # within a second, when it looks at the files again.
        await two.sync()
        if settings.embedded:
            await asyncio.sleep(RELOOK_S)
        for view in (one, two):
            assert view.subject_of("bob") is None and view.key(made["bob"]) is None
            assert unseal(sealed, view.key, "ctx") is None  # unreadable for good
            assert view.subject_of("ann") == made["ann"]
        assert await one.erase("bob", publisher=publisher) == 0  # nothing left to erase
    finally:
        for view in (one, two):
            await view.stop()
        await publisher.stop()


def test_one_subject_a_person_across_replicas_and_erasure_makes_sealed_text_unreadable(
    settings: Settings,
) -> None:
    asyncio.run(scenario(settings))
    records = asyncio.run(read_all(settings, topics.SUBJECT_KEYS))
    if settings.embedded:  # files beside a broker that never compacts: nothing on it
        assert records == []
        assert not any((settings.var_dir / "subject-keys").glob(".*"))  # nothing half-written
    else:  # bob's key, then its tombstone (compacted away: test_forget.py's settings)
        bob = [r for r in records if r.value is None]
        assert bob and all(any(b.key == r.key and r.value for r in records) for b in bob)
