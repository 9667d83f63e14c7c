"""``.env.example`` and the README's configuration table say what the settings classes
say: written from them by ``python -m services.settings``, checked here."""

from __future__ import annotations

import re

import pytest

from services import settings as docs
from services.settings import CLASSES, RunSettings, own_fields, variable

FIX = "run `python -m services.settings` to write it again from the settings classes"


def test_env_example_is_written_from_the_settings_classes() -> None:
    assert docs.ENV_EXAMPLE.read_text() == docs.env_example(), f".env.example drifted: {FIX}"


def test_the_readmes_configuration_table_is_written_from_the_settings_classes() -> None:
    text = docs.README.read_text()
    assert docs.readme(text) == text, f"the README's configuration table drifted: {FIX}"


def test_every_setting_is_documented_once_with_a_description() -> None:
    documented = [name for cls in CLASSES for name in own_fields(cls)]
    assert sorted(documented) == sorted(RunSettings.model_fields)  # each once, none missing
    for cls in CLASSES:
        for name, info in own_fields(cls).items():
            assert info.description, f"{cls.__name__}.{name} has no description"


def test_every_value_env_example_shows_is_one_the_settings_accept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shown = dict(re.findall(r"^# (RAPPORT_[A-Z0-9_]+)=(.+)$", docs.env_example(), re.M))
    assert shown.keys() <= {variable(n) for n in RunSettings.model_fields}
    for name, value in shown.items():
        monkeypatch.setenv(name, value)
    loaded = RunSettings()
    assert loaded.kafka_bootstrap_servers == shown["RAPPORT_KAFKA_BOOTSTRAP_SERVERS"]
    assert loaded.topic_partitions == int(shown["RAPPORT_TOPIC_PARTITIONS"])


def test_a_missing_table_block_is_named() -> None:
    with pytest.raises(ValueError, match="no <!-- settings"):
        docs.readme("# A README without the block\n")
