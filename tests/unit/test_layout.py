"""The development tooling stays out of what is installed: the wheel (and so the image)
leaves ``shared.devtools`` out, and no installed module needs it."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

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


STAGES = {"fan_out", "forward", "aggregate", "publish"}


def _relative_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names |= {node.module} if node.module else {a.name for a in node.names}
    return names


def test_no_stage_of_the_worker_imports_another() -> None:
    for stage in STAGES:
        sideways = _relative_imports(ROOT / "services" / "aggregator" / f"{stage}.py") & STAGES
        assert not sideways, f"{stage}.py imports {sideways}: app.py wires stages together"


def test_a_worker_writes_through_one_path() -> None:
    """Only ``output.Output`` (its produce batches) and ``transport`` touch a producer."""
    for path in (ROOT / "services" / "aggregator").glob("*.py"):
        if path.name in {"output.py", "transport.py"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"producer", "send", "batches"}, (path.name, node.attr)
