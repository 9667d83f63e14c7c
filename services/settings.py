"""Every service's settings class in one place: ``RunSettings``, what ``rapport run`` (the
whole platform in one command) is configured with, and the documentation of them all.

``python -m services.settings`` writes ``.env.example`` and the README's configuration
table from the classes' fields (their descriptions, defaults and examples);
``tests/unit/test_settings_docs.py`` fails when either no longer matches.
"""

from __future__ import annotations

import inspect
import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from services.aggregator.settings import AggregatorSettings
from services.digest.settings import DigestSettings
from services.feedback.settings import FeedbackSettings
from services.metrics.settings import MetricsSettings
from services.recognition.settings import RecognitionSettings
from shared.infra.settings import (
    ApiSettings,
    HttpSettings,
    PrivacySettings,
    SealingSettings,
    Settings,
    SurveySettings,
)

ROOT = Path(__file__).resolve().parent.parent
ENV_EXAMPLE = ROOT / ".env.example"
README = ROOT / "README.md"
TABLE_START = "<!-- settings: written by `python -m services.settings` -->"
TABLE_END = "<!-- /settings -->"
WIDTH = 88


class RunSettings(
    RecognitionSettings, FeedbackSettings, MetricsSettings, DigestSettings, AggregatorSettings
):
    """`rapport run` and the command-line clients: every service's settings, and these."""

    demo: bool = Field(default=True, description="Seed the demo organisation on `rapport run` "
                       "(development only).")  # fmt: skip
    api_key: SecretStr | None = Field(
        default=None,
        description="The key `rapport demo` and other command-line clients send, outside "
        "development (there, the dev key).",
    )


# In the order they are documented: shared parts first, then each service's own.
CLASSES: list[type[Settings]] = [
    Settings, HttpSettings, SealingSettings, ApiSettings, PrivacySettings, SurveySettings,
    RecognitionSettings, FeedbackSettings, MetricsSettings, DigestSettings, AggregatorSettings,
    RunSettings,
]  # fmt: skip


def own_fields(cls: type[Settings]) -> dict[str, FieldInfo]:
    """The fields ``cls`` declares itself, in order (not those it inherits)."""
    return {name: cls.model_fields[name] for name in vars(cls).get("__annotations__", {})}


def variable(name: str) -> str:
    return f"RAPPORT_{name.upper()}"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return json.dumps(list(value), separators=(",", ":"))
    return str(value)


def _default(info: FieldInfo) -> str | None:
    """The default as a value of the variable; None for unset or a secret."""
    if info.default is None or info.default is PydanticUndefined:
        return None
    if isinstance(info.default, SecretStr):
        return None
    return _value(info.default)


def _where(cls: type[Settings]) -> str:
    return Path(inspect.getfile(cls)).relative_to(ROOT).as_posix()


def _summary(cls: type[Settings]) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0]


def env_example() -> str:
    """``.env.example``: every variable, commented out at its default or an example."""
    out = [
        "# Rapport's settings: environment variables prefixed RAPPORT_, or this file copied",
        "# to .env. Every one is optional in development (`make run`). Written by",
        "# `python -m services.settings` from the settings classes: edit those, not this file.",
    ]
    for cls in CLASSES:
        out += ["", f"# === {_summary(cls)} ({_where(cls)})"]
        for name, info in own_fields(cls).items():
            shown = info.examples[0] if info.examples else _default(info)
            out += textwrap.wrap(info.description or "", WIDTH - 2, initial_indent="# ",
                                 subsequent_indent="# ")  # fmt: skip
            out.append(f"# {variable(name)}={'' if shown is None else shown}")
    out += ["", "# === docker compose only", "# Grafana's admin password (required there).",
            "# GRAFANA_ADMIN_PASSWORD="]  # fmt: skip
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def readme_table() -> str:
    """The README's configuration section body: one table per class."""
    out = [TABLE_START]
    for cls in CLASSES:
        out += ["", f"**{_summary(cls)}** (`{_where(cls)}`)", "",
                "| variable | default | meaning |", "|---|---|---|"]  # fmt: skip
        for name, info in own_fields(cls).items():
            default = _default(info)
            if isinstance(info.default, SecretStr):
                shown = "a dev key"
            elif default is None or default == "":
                shown = "unset" if default is None else "empty"
            else:
                shown = f"`{_cell(default)}`"
            out.append(f"| `{variable(name)}` | {shown} | {_cell(info.description or '')} |")
    out += ["", TABLE_END]
    return "\n".join(out)


def readme(text: str) -> str:
    """``text`` (the README) with its configuration table written afresh."""
    pattern = re.compile(re.escape(TABLE_START) + ".*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"the README has no {TABLE_START} ... {TABLE_END} block")
    return pattern.sub(lambda _: readme_table(), text)


def main() -> None:
    ENV_EXAMPLE.write_text(env_example())
    README.write_text(readme(README.read_text()))
    print(f"wrote {ENV_EXAMPLE.name} and the configuration table in {README.name}",
          file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
