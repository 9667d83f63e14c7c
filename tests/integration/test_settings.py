"""Development defaults only when the settings say development; secrets required otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from services.digest.api import create as create_digest
from services.digest.settings import DigestSettings
from services.feedback.api import create as create_feedback
from services.feedback.settings import FeedbackSettings
from services.recognition.api import create as create_recognition
from services.recognition.settings import RecognitionSettings
from shared.infra.auth import ApiKeys
from shared.infra.settings import ApiSettings, Settings, UnsafeSettings

LONG = "k" * 32


MASTER = SecretStr("ab" * 32)


def keys(*pairs: tuple[str, str]) -> SecretStr:
    configs = [{"name": name, "key": key, "scopes": ["recognition:write"]} for name, key in pairs]
    return SecretStr(orjson.dumps(configs).decode())


def test_no_broker_address_is_not_development(tmp_path: Path) -> None:
    settings = ApiSettings(var_dir=tmp_path)  # the embedded broker, but production defaults
    assert settings.embedded and not settings.development
    with pytest.raises(UnsafeSettings, match="RAPPORT_API_KEYS is not set"):
        ApiKeys.from_settings(settings)
    assert not settings.dev_key_file.exists()  # no all-scope key appeared


@pytest.mark.parametrize(
    ("create", "kind", "named"),
    [
        (create_recognition, RecognitionSettings, ["RAPPORT_MASTER_KEY", "RAPPORT_API_KEYS"]),
        (create_feedback, FeedbackSettings, ["RAPPORT_MASTER_KEY", "RAPPORT_API_KEYS"]),
        (
            create_digest,
            DigestSettings,
            [
                "RAPPORT_MASTER_KEY",
                "RAPPORT_API_KEYS",
                "RAPPORT_SMTP_HOST",
                "RAPPORT_DIGEST_LINK_KEY",
                "RAPPORT_DIGEST_PUBLIC_URL",
            ],
        ),
    ],
)
def test_each_service_names_every_missing_secret(
    create: object, kind: type[Settings], named: list[str], tmp_path: Path
) -> None:
    assert callable(create)
    with pytest.raises(UnsafeSettings) as refused:
        create(kind(var_dir=tmp_path))
    assert [p.split(" ", 1)[0] for p in refused.value.problems] == named


def test_keys_shorter_than_32_characters_refuse_to_load_outside_development(
    tmp_path: Path,
) -> None:
    short = ApiSettings(
        var_dir=tmp_path, master_key=MASTER, api_keys=keys(("slack", "change-me-1"), ("hr", LONG))
    )
    with pytest.raises(UnsafeSettings, match="key 'slack' is shorter than 32") as refused:
        ApiKeys.from_settings(short)
    assert "change-me-1" not in str(refused.value)  # the key itself is never printed
    assert ApiKeys.from_settings(short.model_copy(update={"environment": "development"}))
    ok = ApiKeys.from_settings(
        ApiSettings(var_dir=tmp_path, master_key=MASTER, api_keys=keys(("hr", LONG)))
    )
    assert ok.authenticate(LONG) is not None


def test_a_production_service_starts_with_its_secrets(tmp_path: Path) -> None:
    settings = FeedbackSettings(var_dir=tmp_path, api_keys=keys(("hr", LONG)),
                                master_key=MASTER)  # fmt: skip
    assert create_feedback(settings).title == "Rapport feedback service"
    with pytest.raises(UnsafeSettings, match="key 'hr' is shorter than 32"):
        create_feedback(settings.model_copy(update={"api_keys": keys(("hr", "p" * 31))}))


def test_development_generates_the_dev_key(tmp_path: Path) -> None:
    settings = ApiSettings(var_dir=tmp_path, environment="development")
    dev = ApiKeys.from_settings(settings)
    assert dev.authenticate(settings.dev_key_file.read_text().strip()) is not None


def test_rapport_run_outside_development_names_each_secret_and_starts_nothing(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    env["RAPPORT_VAR_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "run"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    for name in (
        "RAPPORT_API_KEYS",
        "RAPPORT_MASTER_KEY",
        "RAPPORT_SMTP_HOST",
        "RAPPORT_DIGEST_LINK_KEY",
        "RAPPORT_DIGEST_PUBLIC_URL",
    ):
        assert name in done.stderr
    assert "starting embedded broker" not in done.stdout
    assert not (tmp_path / "dev-api-key").exists()


def test_an_aggregator_outside_development_needs_the_master_key_that_opens_answers(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAPPORT_")}
    env |= {"RAPPORT_VAR_DIR": str(tmp_path), "RAPPORT_AGGREGATOR_METRICS_PORT": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "aggregator"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "RAPPORT_MASTER_KEY is not set" in done.stderr
