"""Every service's OpenAPI, fuzzed with schemathesis against the running service, and
the Slack routes (not in the OpenAPI: Slack, not people, calls them) from a schema of
what Slack sends, each request signed as Slack signs it.

A fixed seed and a bounded number of cases per operation: ``PER_SERVICE`` spread over a
schema's operations that take input, and at least ``MIN_CASES`` each; a valid key with
every scope. Fails on any 5xx, and on any answer the schema does not document (status,
content type or body schema).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import urlencode

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
from schemathesis.schemas import BaseSchema
from slack_sdk.signature import SignatureVerifier

from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port
from shared.infra.settings import Settings
from tests.support import wait_until

PER_SERVICE = 300  # cases, over the operations that take input
MIN_CASES = 75  # per operation that takes input (one without input has one case)
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
        **SLACK_ENV,
    })  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: _ready(url), timeout=30)
    auth = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    cases = fuzz(schemathesis.openapi.from_url(f"{url}/openapi.json"), url, auth)
    assert len(cases) >= 3  # /healthz, /readyz, /metrics and the service's own
    if name == "recognition":
        cases |= fuzz(schemathesis.openapi.from_dict(SLACK_SCHEMA), url, {}, sign=True)
    # The metrics service's operations take no input: one case each.
    print(f"{name}: {sum(cases.values())} cases, {cases}")  # the closing note's figures
    if name != "metrics":
        assert sum(cases.values()) >= PER_SERVICE, cases


def fuzz(schema: BaseSchema, url: str, headers: dict[str, str], sign: bool = False) -> Counter[str]:
    """Call every operation of ``schema`` with generated cases; the cases run, by operation."""
    ran: Counter[str] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    with_input = sum(1 for op in operations if any(op.iter_parameters()) or op.body)
    cases = max(MIN_CASES, -(-PER_SERVICE // max(1, with_input)))
    with httpx.Client(base_url=url, timeout=30) as http:
        for operation in operations:

            @given(case=operation.as_strategy())
            @hypothesis_settings(
                max_examples=cases,
                derandomize=True,  # a fixed seed: the same cases every run
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            def call(case: Case) -> None:
                ran[f"{case.method} {case.path}"] += 1
                if not sign:
                    case.call_and_validate(base_url=url, headers=headers, checks=CHECKS,
                                           timeout=30)  # fmt: skip
                    return
                kwargs = case.as_transport_kwargs(base_url=url)
                body = _body(kwargs)
                signed = {"Content-Type": kwargs["headers"]["Content-Type"], **slack_signed(body)}
                response = http.post(case.formatted_path, content=body, headers=signed)
                case.validate_response(response, checks=CHECKS)

            call()
    return ran


def _body(kwargs: dict[str, Any]) -> bytes:
    """The bytes a generated case sends, as Slack would send them (form or JSON)."""
    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()  # any int, as Slack could send
    data = kwargs.get("data", b"")
    return urlencode(data).encode() if isinstance(data, dict) else bytes(data)


SLACK_SECRET = "fuzz-signing-secret-0123456789abcdef"
SLACK_ENV = {
    "RAPPORT_SLACK_SIGNING_SECRET": SLACK_SECRET,
    "RAPPORT_SLACK_TEAM_ID": "T0RAP",
    "RAPPORT_SLACK_APP_ID": "A0RAP",
    "RAPPORT_SLACK_REACTION_EMOJI": "tada",
    "RAPPORT_SLACK_REACTION_VALUE": "appreciation",
}


def slack_signed(body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=timestamp, body=body)
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": str(signature)}


# What Slack sends, loosely: every field of any shape, with the values that reach the
# deeper branches (our workspace and app, a reaction, the kudos emoji) among them.
_ANY: dict[str, Any] = {}
_EVENT = {"type": "object", "properties": {
    "type": {"enum": ["reaction_added", "message"]}, "reaction": {"enum": ["tada", "x"]},
    "user": _ANY, "item_user": _ANY, "item": {"anyOf": [_ANY, {"type": "object", "properties": {
        "type": {"enum": ["message", "file"]}, "channel": _ANY, "ts": _ANY}}]},
}}  # fmt: skip
_ENVELOPE = {"type": "object", "properties": {
    "type": {"enum": ["event_callback", "url_verification", "app_rate_limited"]},
    "team_id": {"enum": ["T0RAP", "T0OTHER"]}, "api_app_id": {"enum": ["A0RAP", "A0OTHER"]},
    "challenge": _ANY, "event": {"anyOf": [_EVENT, _ANY]},
}}  # fmt: skip
_COMMAND = {"type": "object", "additionalProperties": {"type": "string"}, "properties": {
    "team_id": {"enum": ["T0RAP", "T0OTHER"]}, "api_app_id": {"enum": ["A0RAP", "A0OTHER"]},
    "user_id": {"type": "string"}, "channel_id": {"type": "string"},
    "text": {"type": "string"},
}}  # fmt: skip
_ANSWERS = {str(code): {"description": meaning} for code, meaning in {
    200: "answered (a refusal is an ephemeral message)", 400: "not UTF-8, not JSON",
    401: "not signed, stale or a replay", 403: "another workspace or app",
    422: "not what Slack sends", 429: "too many bad signatures", 503: "retry later",
}.items()}  # fmt: skip
SLACK_SCHEMA = {
    "openapi": "3.0.3",
    "info": {"title": "Slack's requests to Rapport", "version": "1"},
    "paths": {
        "/slack/commands": {"post": {"responses": _ANSWERS, "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": _COMMAND}}}}},
        "/slack/events": {"post": {"responses": _ANSWERS, "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"anyOf": [_ENVELOPE, _ANY]}}}}}},
    },
}  # fmt: skip


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
