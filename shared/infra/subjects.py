"""Every person's subject id and data key (``shared.infra.sealing``): kept, found, erased.

On Apache Kafka the keys live in a compacted topic (key = subject id), each wrapped by the
master key; an erased person's keys get tombstones, compacted away within
``forget_within_s`` (``topics.forgetting``, with the aggregator's ticks). Beside the
embedded broker, whose memory storage never compacts (a tombstone there would destroy
nothing), they are files in ``var/subject-keys/``, deleted at erasure.

A person's first subject is theirs: two replicas that give a new person a key at the
same moment write two, and every reader takes the same one (the first in the log; the
file created first). Erasing a person destroys every key ever written for them.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson

from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import SUBJECT_KEY, SubjectKey
from shared.infra.kafka import Publisher, Record
from shared.infra.sealing import (
    LocalMasterKey,
    MasterKey,
    forget_derived,
    new_data_key,
    new_subject,
)
from shared.infra.settings import SealingSettings
from shared.infra.views import TopicView, read_event

RELOOK_S = 1.0


class SubjectKeys(TopicView):
    topic = topics.SUBJECT_KEYS

    def __init__(self, settings: SealingSettings, master: MasterKey | None = None) -> None:
        super().__init__(settings)
        secret = settings.master_key.get_secret_value()
        self._master = master or LocalMasterKey(bytes.fromhex(secret))
        self._dir = settings.var_dir / "subject-keys" if settings.embedded else None
        self._subjects: dict[str, list[str]] = {}  # person -> their subjects, log order
        self._wrapped: dict[str, tuple[str, bytes]] = {}  # subject -> person, wrapped key
        self._keys: dict[str, bytes] = {}  # unwrapped, as used
        # Beside the embedded broker: what was read, and the file that must still be there.
        self._files: dict[str, tuple[str, str]] = {}  # person -> their file, subject
        self._key_paths: dict[str, str] = {}  # subject -> its file
        self._looked: dict[str, float] = {}  # file -> when it was last seen there

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if key is None:
            return
        subject = key.decode()
        if value is None:
            self._forget(subject)
            return
        found = read_event(SubjectKey, key, headers, value)
        if found is None or subject in self._wrapped:
            return
        self._wrapped[subject] = (found.person_id, bytes.fromhex(found.wrapped))
        self._subjects.setdefault(found.person_id, []).append(subject)

    def _forget(self, subject: str) -> None:
        person, _ = self._wrapped.pop(subject, ("", b""))
        if self._keys.pop(subject, None) is not None:
            forget_derived()
        if subjects := self._subjects.get(person):
            subjects.remove(subject)
            if not subjects:
                del self._subjects[person]

    # -- reading --------------------------------------------------------------------

    def subject_of(self, person_id: str) -> str | None:
        """The person's subject id; ``None`` if they have none (or were erased)."""
        if self._dir is not None:
            known = self._files.get(person_id)
            if known is not None and self._still_there(known[0]):
                return known[1]
            path = self._person_file(person_id)
            found = self._read_file(path)
            if found is None:
                return None
            self._files[person_id] = (str(path), str(found["subject"]))
            return self._files[person_id][1]
        subjects = self._subjects.get(person_id)
        return subjects[0] if subjects else None

    def key(self, subject: str) -> bytes | None:
        """A subject's data key; ``None`` once its person is erased."""
        cached = self._keys.get(subject)
        if self._dir is None:
            if cached is None and subject in self._wrapped:
                cached = self._keys[subject] = self._master.unwrap(self._wrapped[subject][1],
                                                                   subject)  # fmt: skip
            return cached  # until its tombstone is read
        if cached is not None and self._still_there(self._key_paths[subject]):
            return cached
        path = self._subject_file(subject)
        found = self._read_file(path)
        if found is None:
            if self._keys.pop(subject, None) is not None:
                forget_derived()  # erased by another process
            return None
        key = self._master.unwrap(bytes.fromhex(str(found["wrapped"])), subject)
        self._keys[subject], self._key_paths[subject] = key, str(path)
        return key

    def _still_there(self, path: str) -> bool:
        """Whether a file read before is there still: another process may have erased it.
        Looked at once a second at most (a look is a system call: a batch of 500 kudos
        would make a thousand), so an erasure elsewhere takes effect within a second."""
        now = time.monotonic()
        if now - self._looked.get(path, -RELOOK_S) < RELOOK_S:
            return True
        if not os.path.exists(path):
            self._looked.pop(path, None)
            return False
        self._looked[path] = now
        return True

    # -- writing --------------------------------------------------------------------

    async def ensure(self, person_ids: Iterable[str], publisher: Publisher) -> dict[str, str]:
        """Every person's subject, made for those who have none yet."""
        found = {p: self.subject_of(p) for p in sorted(set(person_ids))}
        missing = [p for p, s in found.items() if s is None]
        if not missing:
            return {p: s for p, s in found.items() if s is not None}
        if self._dir is not None:
            for person in missing:
                self._create_files(person)
        else:
            await publisher.publish([self._record(p) for p in missing])
            await self.sync()  # up to these, at least: the first in the log is theirs
        subjects = {p: self.subject_of(p) for p in found}
        return {p: s for p, s in subjects.items() if s is not None}

    async def erase(self, person_id: str, publisher: Publisher) -> int:
        """Destroy every key of ``person_id``; return how many there were."""
        if self._dir is not None:
            found = self._read_file(self._person_file(person_id))
            if found is None:
                return 0
            subject = str(found["subject"])
            self._subject_file(subject).unlink(missing_ok=True)
            self._person_file(person_id).unlink(missing_ok=True)
            self._files.pop(person_id, None)
            self._keys.pop(subject, None)
            forget_derived()
            return 1
        await self.sync()
        subjects = list(self._subjects.get(person_id, []))
        if subjects:
            await publisher.publish([Record(self.topic, s.encode(), None, [])
                                     for s in subjects])  # fmt: skip
            for subject in subjects:
                self._forget(subject)
        return len(subjects)

    def _record(self, person_id: str) -> Record:
        subject = new_subject()
        wrapped = self._master.wrap(new_data_key(), subject)
        data = SubjectKey(person_id=person_id, wrapped=wrapped.hex()).model_dump()
        ce = CloudEvent(subject, "/rapport/subjects", SUBJECT_KEY, datetime.now(UTC), data)
        return Record.of(self.topic, subject, ce)

    # -- beside the embedded broker -------------------------------------------------

    def _person_file(self, person_id: str) -> Path:
        assert self._dir is not None  # the file's name says nothing of the person
        return self._dir / f"person-{hashlib.sha256(person_id.encode()).hexdigest()}.json"

    def _subject_file(self, subject: str) -> Path:
        assert self._dir is not None
        return self._dir / f"subject-{subject}.json"

    def _create_files(self, person_id: str) -> None:
        """The subject file first, then the person's (created only if absent: the first
        replica's wins; a losing subject file is removed)."""
        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        subject = new_subject()
        wrapped = self._master.wrap(new_data_key(), subject)
        _write_new(self._subject_file(subject), {"person_id": person_id, "wrapped": wrapped.hex()})
        try:
            _write_new(self._person_file(person_id), {"subject": subject})
        except FileExistsError:
            self._subject_file(subject).unlink(missing_ok=True)

    @staticmethod
    def _read_file(path: Path) -> dict[str, object] | None:
        try:
            found: dict[str, object] = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return found


def _write_new(path: Path, data: dict[str, str]) -> None:
    """Create ``path``, whole, readable by this user alone; ``FileExistsError`` if it is
    there already (written aside, then linked: a reader never sees half of it)."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.{new_subject()}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(data))
        os.link(aside, path)
    finally:
        aside.unlink()
