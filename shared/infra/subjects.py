"""Every person's subject id and data key (``shared.infra.sealing``): kept, found, erased.

On Apache Kafka the keys live in a compacted topic (key = subject id), each wrapped by the
master key; an erased person's keys get tombstones, compacted away within
``forget_within_s`` (``topics.forgetting``, with the aggregator's ticks). Beside the
embedded broker, whose memory storage never compacts (a tombstone there would destroy
nothing), they are files in ``var/subject-keys/``, deleted at erasure.

Survey answers are sealed the same way, each respondent's with a key of their own for
the round (``ResponseKeys``: the respondent's token stands for the person), so that
erasing someone while a round is open destroys their answer to it, wherever it is.

A person's first subject is theirs: two replicas that give a new person a key at the
same moment write two, and every reader takes the same one (the first in the log; the
file created first). Erasing a person destroys every key ever written for them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from shared.contract import topics
from shared.contract.codec import CloudEvent
from shared.contract.events import SUBJECT_KEY, SURVEY_RESPONSE, Answers, SubjectKey
from shared.infra.kafka import Publisher, Record
from shared.infra.sealing import (
    LocalMasterKey,
    MasterKey,
    forget_derived,
    new_data_key,
    new_subject,
    seal,
    unseal,
)
from shared.infra.settings import SealingSettings
from shared.infra.views import TopicView, read_event

RELOOK_S = 1.0
EXPIRE_EVERY_S = 3600.0  # how often files past their retention are looked for
# How long an aggregator waits for every response key before it closes a round.
OPEN_SYNC_S = 30.0


class SubjectKeys(TopicView):
    topic = topics.SUBJECT_KEYS
    files = "subject-keys"  # their directory in var/, beside the embedded broker

    def __init__(self, settings: SealingSettings, master: MasterKey | None = None) -> None:
        super().__init__(settings)
        secret = settings.master_key.get_secret_value()
        self._master = master or LocalMasterKey(bytes.fromhex(secret))
        self._dir = settings.var_dir / self.files if settings.embedded else None
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

    async def erase(self, *person_ids: str, publisher: Publisher) -> int:
        """Destroy every key of each of ``person_ids`` (one catch-up, one write); return
        how many there were."""
        if self._dir is not None or not person_ids:
            return sum(self._erase_files(p) for p in person_ids)
        await self.sync()
        subjects = [s for p in person_ids for s in self._subjects.get(p, [])]
        if subjects:
            await publisher.publish([Record(self.topic, s.encode(), None, [])
                                     for s in subjects])  # fmt: skip
            for subject in subjects:
                self._forget(subject)
        return len(subjects)

    def _erase_files(self, person_id: str) -> int:
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


class ResponseKeys(SubjectKeys):
    """Each survey response's key: the feedback service seals a respondent's answers to a
    round with a key of their own (their token, unique to the round, stands for the
    person); the aggregator opens them when the round closes; erasing the respondent
    while it is open destroys the key (``services.recognition.service.erase``), and with
    it the answer, wherever it is (the survey topics, the aggregator's table).

    On Apache Kafka the keys go with the answers they open: compacted (a destroyed key
    is forgotten within ``forget_within_s``) and deleted after
    ``survey_retention_days``, like the raw answers. Beside the embedded broker, their
    files go after the same time. So an answer counts if its round closes within that
    time of it, as a replay of the survey topic counts it.
    """

    topic = topics.RESPONSE_KEYS
    files = "response-keys"

    def __init__(self, settings: SealingSettings, master: MasterKey | None = None) -> None:
        super().__init__(settings, master)
        self._retention = timedelta(days=settings.survey_retention_days)
        self._expired_at = -EXPIRE_EVERY_S
        self._read_at: dict[str, float] = {}  # subject -> when read (time.time), in order

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        """As a data key; and those read longer ago than the retention are dropped from
        memory (the broker deletes them then, without a tombstone)."""
        super().apply(key, headers, value)
        if key is not None and value is not None:
            self._read_at.setdefault(key.decode(), time.time())
        elif key is not None:
            self._read_at.pop(key.decode(), None)
        now = time.monotonic()
        if now - self._expired_at >= EXPIRE_EVERY_S:
            self._expired_at = now
            cutoff = time.time() - self._retention.total_seconds()
            while self._read_at and next(iter(self._read_at.values())) < cutoff:
                subject = next(iter(self._read_at))
                del self._read_at[subject]
                self._forget(subject)

    async def seal(
        self, answers: Answers, survey_id: str, respondent: str, publisher: Publisher
    ) -> str:
        """``answers`` sealed with ``respondent``'s key for the round (made if need be)."""
        subject = (await self.ensure([respondent], publisher)).get(respondent)
        key = self.key(subject) if subject is not None else None
        if subject is None or key is None:  # erased between the two: never kept
            raise RuntimeError(f"no response key for {respondent!r} in {survey_id!r}")
        return seal(answers.model_dump_json(), {subject: key}, _context(survey_id, respondent))

    def open(self, sealed: str, survey_id: str, respondent: str) -> Answers | None:
        """The answers; ``None`` if their key is gone (the respondent erased, or past
        its retention). ``SealingError`` or ``ValidationError`` if they do not open."""
        text = unseal(sealed, self.key, _context(survey_id, respondent))
        return None if text is None else Answers.model_validate_json(text)

    async def all_read(self) -> None:
        """Return once every key written until now is read (none to read beside the
        embedded broker: files are looked up as needed)."""
        if self._dir is None:
            await self.sync(OPEN_SYNC_S)

    def _create_files(self, person_id: str) -> None:
        super()._create_files(person_id)
        now = time.monotonic()
        if now - self._expired_at >= EXPIRE_EVERY_S:
            self._expired_at = now
            self._expire()

    def _expire(self) -> None:
        """Remove the key files older than the retention."""
        assert self._dir is not None
        cutoff = time.time() - self._retention.total_seconds()
        for path in self._dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()


def _context(survey_id: str, respondent: str) -> str:
    return f"{SURVEY_RESPONSE} {survey_id} {respondent}"


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
