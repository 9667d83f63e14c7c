"""The README's topic table names every topic Rapport creates, the internal ones too."""

from __future__ import annotations

from shared.contract.topics import all_topics
from shared.infra.settings import Settings
from tests.support import ROOT


def test_the_readme_lists_every_topic() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| topic | partitions |") :].split("\n\n", 1)[0]
    rows = {line.split("|")[1] for line in table.splitlines()[2:]}
    listed = {name.strip(" `") for row in rows for name in row.split(",")}
    assert {t.name for t in all_topics(Settings())} == listed
