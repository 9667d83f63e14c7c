"""The people directory (compacted topic, key = person id), as every service sees it."""

from __future__ import annotations

import logging
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from shared.contract import topics
from shared.contract.codec import CodecError, decode
from shared.contract.events import PERSON, Contact, DirectoryEntry, Person
from shared.infra.sealing import SealingError, unseal
from shared.infra.settings import Settings
from shared.infra.subjects import SubjectKeys
from shared.infra.views import TopicView

log = logging.getLogger(__name__)


ERASED = "someone whose data was erased"  # how a digest shows a person it cannot name


def contact_context(person_id: str) -> str:
    """What a sealed contact is bound to: its person (moved to another, it does not open)."""
    return f"{PERSON} {person_id}"


def plain(person: Person) -> DirectoryEntry:
    """``person`` as a directory entry with their contact in plain text (as written before
    contacts were sealed, and by tests)."""
    return DirectoryEntry.model_validate(person.model_dump())


def read_person(
    key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
) -> tuple[str, DirectoryEntry | None] | None:
    """A directory record as (person id, entry or ``None`` if removed); ``None`` (and a
    warning) if it cannot be read."""
    if key is None:
        log.warning("directory record without key ignored")
        return None
    if value is None:
        return key.decode(), None
    try:
        data = decode(headers, value).data
        # A tolerant reader: fields added by later versions are left out, not refused.
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k in DirectoryEntry.model_fields}
        return key.decode(), DirectoryEntry.model_validate(data)
    except (CodecError, ValidationError) as exc:
        log.warning("invalid directory record %r ignored: %s", key, exc)
        return None


class DirectoryView(TopicView):
    """People by id and active members by team, kept up to date from Kafka.

    With ``subjects`` (the people's data keys), ``contact`` opens sealed contacts: only
    where people are named (the digest). It opens one each time it is asked, and keeps
    no name: once a person is erased, no view can name them again.
    """

    topic = topics.DIRECTORY

    def __init__(self, settings: Settings, subjects: SubjectKeys | None = None) -> None:
        super().__init__(settings)
        self._subjects = subjects
        self._people: dict[str, DirectoryEntry] = {}
        self._teams: dict[str, set[str]] = defaultdict(set)
        self._slack: dict[str, set[str]] = defaultdict(set)  # Slack user id -> person ids

    def get(self, person_id: str) -> DirectoryEntry | None:
        return self._people.get(person_id)

    def contact(self, person: DirectoryEntry) -> Contact | None:
        """Their name and e-mail address; ``None`` once they are erased (or where no
        data keys are at hand)."""
        if person.name is not None and person.email is not None:
            return Contact.model_construct(name=person.name, email=person.email)
        if person.sealed_contact is None or self._subjects is None:
            return None
        subjects = self._subjects
        try:
            opened = unseal(person.sealed_contact, subjects.key, contact_context(person.id))
        except SealingError as exc:
            log.warning("the contact of %r does not open: %s", person.id, exc)
            return None
        return None if opened is None else Contact.model_validate_json(opened)

    def name(self, person: DirectoryEntry) -> str:
        """Their name as a digest shows it; ``ERASED`` for someone it cannot name."""
        contact = self.contact(person)
        return contact.name if contact is not None else ERASED

    def team_of(self, person_id: str) -> str | None:
        person = self._people.get(person_id)
        return person.team_id if person is not None else None

    async def find_slack_user(self, slack_id: str) -> DirectoryEntry | None:
        """The active person with this Slack user id; ``None`` if none is, or if more
        than one is (which of them was meant cannot be known). On a miss, catch up once."""
        for attempt in range(2):
            found = [p for i in self._slack.get(slack_id, ()) if (p := self._people[i]).active]
            if found or attempt:
                return found[0] if len(found) == 1 else None
            await self.sync()
        return None

    async def inactive(self, people: set[str]) -> set[str]:
        """Who of ``people`` is not an active person; on a miss, catch up once (they may
        be a moment old), however many miss."""
        missing = {i for i in people if not self._active(i)}
        if missing:
            await self.sync()
            missing = {i for i in missing if not self._active(i)}
        return missing

    def _active(self, person_id: str) -> bool:
        person = self._people.get(person_id)
        return person is not None and person.active

    async def find_active(self, person_id: str) -> DirectoryEntry | None:
        """The person if active; on a miss, catch up once: they may be a moment old."""
        if not self._active(person_id):
            await self.sync()
        return self._people[person_id] if self._active(person_id) else None

    def reports(self, manager_id: str) -> list[DirectoryEntry]:
        """Active people whose manager is ``manager_id``."""
        return [p for p in self._people.values() if p.manager_id == manager_id and p.active]

    def led_team(self, leader: DirectoryEntry) -> str:
        """The team a manager's digest and self-assessments are about.

        It is the team most of their active reports are in, wherever the manager sits;
        on a tie, the manager's own team if it is one of them, else the first by id.
        Raise ``ValueError`` for someone with no active reports.
        """
        counts = Counter(p.team_id for p in self.reports(leader.id))
        if not counts:
            raise ValueError(f"{leader.id!r} manages no active people")
        most = max(counts.values())
        tied = sorted(t for t, n in counts.items() if n == most)
        return leader.team_id if leader.team_id in tied else tied[0]

    def managers(self) -> list[DirectoryEntry]:
        """Active people with at least one active report, by id."""
        ids = {p.manager_id for p in self._people.values() if p.active and p.manager_id}
        return [p for i in sorted(ids) if (p := self._people.get(i)) is not None and p.active]

    def members(self, team_id: str) -> list[DirectoryEntry]:
        """Active members of ``team_id``, by id."""
        return [self._people[p] for p in sorted(self._teams.get(team_id, ()))]

    def teams(self) -> list[str]:
        """Teams with at least one active member."""
        return sorted(t for t, ids in self._teams.items() if ids)

    def sizes(self) -> dict[str, int]:
        """Active members per team, for every team with any."""
        return {t: len(ids) for t, ids in self._teams.items() if ids}

    def people(self) -> list[DirectoryEntry]:
        return list(self._people.values())

    def put(self, person_id: str, person: DirectoryEntry | None) -> None:
        """Set or (with ``None``) remove one person."""
        old = self._people.pop(person_id, None)
        if old is not None:
            self._teams[old.team_id].discard(person_id)
            if old.slack_id is not None:
                self._slack[old.slack_id].discard(person_id)
        if person is not None:
            self._people[person_id] = person
            if person.active:
                self._teams[person.team_id].add(person_id)
            if person.slack_id is not None:
                self._slack[person.slack_id].add(person_id)

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if (record := read_person(key, headers, value)) is not None:
            self.put(*record)


@dataclass(slots=True)
class Placement:
    """Where a person sits: all the aggregator needs to know of them."""

    id: str
    team_id: str
    manager_id: str | None


class Roster(TopicView):
    """Every person's team and manager, kept up to date from the directory topic.

    A tenth of the memory of a :class:`DirectoryView`: one small object per person,
    its strings shared (interned) with every bucket that counts the person.
    """

    topic = topics.DIRECTORY

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._people: dict[str, Placement] = {}

    def get(self, person_id: str) -> Placement | None:
        return self._people.get(person_id)

    def apply(
        self, key: bytes | None, headers: Sequence[tuple[str, bytes]], value: bytes | None
    ) -> None:
        if (record := read_person(key, headers, value)) is None:
            return
        person_id, person = record
        if person is None:
            self._people.pop(person_id, None)
            return
        manager_id = person.manager_id and sys.intern(person.manager_id)
        placement = Placement(sys.intern(person_id), sys.intern(person.team_id), manager_id)
        self._people[placement.id] = placement
