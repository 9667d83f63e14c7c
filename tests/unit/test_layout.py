"""The development tooling stays out of what is installed: the wheel (and so the image)
leaves ``shared.devtools`` out, and no installed module needs it."""

from __future__ import annotations

import ast
import tomllib

from setuptools import find_packages

from tests.support import ROOT


def test_the_wheel_leaves_the_development_tooling_out() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(find_packages(str(ROOT), **config["packages"]["find"]))
    assert "shared.devtools" not in packages
    assert {"shared.contract", "shared.infra", "shared.readmodels", "shared.figures"} <= packages


def test_only_the_kafka_command_reaches_for_the_development_tooling() -> None:
    users = set()
    for path in [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]:
        if "devtools" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "shared.devtools"
            ):
                users.add(path.relative_to(ROOT).as_posix())
    assert users == {"services/cli.py"}  # `rapport kafka`, which says so in the image
