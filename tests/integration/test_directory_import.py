"""`rapport directory import` publishes a CSV to the compacted directory topic, or nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import orjson

from shared.contract import topics
from shared.infra.settings import Settings
from tests.support.kafka import read_all

HEADER = "id,name,email,team_id,manager_id,timezone,active,slack_id\n"


def test_import_publishes_every_row(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text(
        HEADER
        + "lead,Lee Park,lee@x.io,alpha,,Europe/Berlin,true,U0LEE\n"
        + "ann,Ann Bell,ann@x.io,alpha,lead,Europe/Berlin,true,\n"
        + "old,Old Timer,old@x.io,alpha,lead,UTC,false,W0OLD\n"
    )
    assert spawn("directory", "import", str(csv)).wait(timeout=60) == 0
    records = asyncio.run(read_all(settings, topics.DIRECTORY))
    people = {r.key.decode(): orjson.loads(r.value) for r in records}
    assert set(people) == {"lead", "ann", "old"}
    assert people["ann"]["manager_id"] == "lead" and people["lead"]["manager_id"] is None
    assert people["old"]["active"] is False
    assert [people[p].get("slack_id") for p in ("lead", "ann", "old")] == ["U0LEE", None, "W0OLD"]


def test_a_bad_row_publishes_nothing_and_says_where(
    settings: Settings, spawn: Callable[..., Popen[bytes]], tmp_path: Path
) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text(
        HEADER + "ann,Ann,ann@x.io,alpha,,UTC,true,\nbob,Bob,not-an-email,alpha,,UTC,1,\n"
    )
    log = tmp_path / "import.log"
    assert spawn("directory", "import", str(csv), log=log).wait(timeout=60) == 1
    assert "line 3: email" in log.read_text()
    csv.write_text(HEADER + "ann,Ann,ann@x.io,alpha,,UTC,true,@ann\n")
    assert spawn("directory", "import", str(csv), log=log).wait(timeout=60) == 1
    assert "line 2: slack_id" in log.read_text()
    assert asyncio.run(read_all(settings, topics.DIRECTORY)) == []
