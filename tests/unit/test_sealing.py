"""Sealing with several people's keys: any one erased, the text is gone."""

from __future__ import annotations

import pytest

from shared.infra import subjects
from shared.infra.sealing import (
    LocalMasterKey,
    SealingError,
    new_data_key,
    new_subject,
    seal,
    subjects_of,
    unseal,
)
from shared.infra.settings import SealingSettings
from shared.infra.subjects import ResponseKeys

CONTEXT = "rapport.recognition.given.v1 e1"


def test_a_text_about_three_people_opens_only_with_all_three_keys() -> None:
    keys = {new_subject(): new_data_key() for _ in range(3)}
    sealed = seal("Thanks for the release, both of you!", keys, CONTEXT)
    assert "release" not in sealed and sealed.isascii()
    assert set(subjects_of(sealed)) == set(keys)
    assert unseal(sealed, keys.get, CONTEXT) == "Thanks for the release, both of you!"
    for erased in keys:  # any one of them erased: unreadable
        assert unseal(sealed, {s: k for s, k in keys.items() if s != erased}.get, CONTEXT) is None


def test_a_sealed_text_is_bound_to_its_context_and_keys() -> None:
    keys = {new_subject(): new_data_key()}
    sealed = seal("hello", keys, CONTEXT)
    with pytest.raises(SealingError):
        unseal(sealed, keys.get, "rapport.recognition.given.v1 e2")  # moved to another event
    with pytest.raises(SealingError):
        unseal(sealed, lambda s: new_data_key(), CONTEXT)  # another key under the same id
    with pytest.raises(SealingError):
        unseal("plain text", keys.get, CONTEXT)
    tampered = sealed[:-2] + ("AA" if not sealed.endswith("AA") else "BB")
    with pytest.raises(SealingError):
        unseal(tampered, keys.get, CONTEXT)
    assert seal("hello", keys, CONTEXT) != sealed  # a fresh nonce each time


def test_the_master_key_wraps_each_data_key_for_its_subject() -> None:
    master = LocalMasterKey(new_data_key())
    subject, key = new_subject(), new_data_key()
    wrapped = master.wrap(key, subject)
    assert key not in wrapped and master.unwrap(wrapped, subject) == key
    with pytest.raises(SealingError):
        master.unwrap(wrapped, new_subject())  # moved to another subject
    with pytest.raises(SealingError):
        LocalMasterKey(new_data_key()).unwrap(wrapped, subject)  # another master key
    with pytest.raises(ValueError, match="32 bytes"):
        LocalMasterKey(b"short")


def test_response_keys_read_longer_ago_than_the_retention_leave_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Apache Kafka the broker deletes them after the retention, without a tombstone:
    a view that followed them would keep every one for as long as it runs."""
    settings = SealingSettings(kafka_bootstrap_servers="127.0.0.1:1", survey_retention_days=1)
    keys = ResponseKeys(settings)
    clock = [1_000_000.0]
    monkeypatch.setattr(subjects.time, "time", lambda: clock[0])
    monkeypatch.setattr(subjects.time, "monotonic", lambda: clock[0])
    for n, owner in enumerate(["a" * 32, "b" * 32]):
        record = keys._record(owner)  # as the feedback service writes it
        keys.apply(record.key, record.headers, record.value)
        assert keys.subject_of(owner) is not None
        clock[0] += 12 * 3600 * (n + 1)  # 12 h, then 24 h more
    keys.apply(b"tick", [], None)  # anything read looks again
    assert keys.subject_of("a" * 32) is None  # read 36 h ago
    assert keys.subject_of("b" * 32) is not None  # 24 h ago: not past a day yet
