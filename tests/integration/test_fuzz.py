"""Every service's OpenAPI, fuzzed with schemathesis against the running service.

A fixed seed and a bounded number of cases per operation; a valid key with every scope.
Fails on any 5xx, and on any answer the OpenAPI does not document (status, content
type or body schema).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from shared.auth import ensure_dev_key
from shared.broker import free_port
from shared.settings import Settings
from tests.conftest import wait_until

CASES = 50  # per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("name", ["recognition", "feedback", "digest", "metrics"])
def test_fuzzing_the_openapi_finds_no_5xx_and_no_undocumented_answer(
    name: str,
    settings: Settings,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
) -> None:
    port = free_port()
    spawn(name, log=tmp_path / f"{name}.log", extra_env={
        f"RAPPORT_{name.upper()}_PORT": str(port),
        "RAPPORT_SMTP_PORT": str(free_port()),  # the digest's development mail sink
        "RAPPORT_RATE_LIMIT_PER_S": "0",  # the fuzzer is one fast client
    })  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ready(url), timeout=30)
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    auth = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 3  # /healthz, /readyz, /metrics and the service's own

    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=CASES,
            derandomize=True,  # a fixed seed: the same cases every run
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Case) -> None:
            case.call_and_validate(base_url=url, headers=auth, checks=CHECKS, timeout=30)

        call()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
