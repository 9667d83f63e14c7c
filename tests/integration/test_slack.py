"""Kudos from Slack against a real broker, a real aggregator and metrics service.

Slack's servers cannot be reached here: a local HTTP server stands in for them (the
commands' response URLs and the Web API), and requests are signed as Slack signs them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient
from slack_sdk.signature import SignatureVerifier

from services.recognition.api import create
from services.recognition.service import message_context
from shared.contract import topics
from shared.contract.codec import decode
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port, wait_for_port
from shared.infra.sealing import unseal
from shared.infra.settings import Settings
from shared.infra.subjects import SubjectKeys
from tests.support.brokers import Broker
from tests.support.kafka import read_all
from tests.support.metrics import scrape
from tests.support.people import as_json, person

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PEOPLE = as_json(
    [
        person("ann", "t1", slack_id="U0ANN"),
        person("bob", "t1", slack_id="U0BOB"),
        person("cid", "t2", slack_id="U0CID"),
        person("dan", "t2"),  # no Slack id
        # Teams of k = 5: a smaller team has no figure on /metrics at all.
        *(person(f"{t}x{i}", t) for t in ("t1", "t2") for i in range(3)),
    ]
)


class SlackStandIn:
    """A local HTTP server in Slack's place: records what is posted to it, answers ok."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        posted = self.posted

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    body = json.loads(raw)
                else:  # the Web API client posts forms
                    body = {k: v for k, v in httpx.QueryParams(raw.decode()).items()}
                posted.append((self.path, body))
                answer = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, path: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for where, body in self.posted:
                if where == path:
                    return body
            time.sleep(0.05)
        raise AssertionError(f"nothing posted to {path}; posted: {self.posted}")


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    stand_in = SlackStandIn()
    thread = threading.Thread(target=stand_in.server.serve_forever, daemon=True)
    thread.start()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


@pytest.fixture
def slack_env(env: dict[str, str], slack: SlackStandIn) -> dict[str, str]:
    env.update({
        "RAPPORT_SLACK_SIGNING_SECRET": SECRET,
        "RAPPORT_SLACK_BOT_TOKEN": "xoxb-test-token",
        "RAPPORT_SLACK_API_URL": f"{slack.url}/api/",
        "RAPPORT_SLACK_PUBLIC_CONFIRMATIONS": "true",
        "RAPPORT_SLACK_REACTION_EMOJI": "tada",
        "RAPPORT_SLACK_REACTION_VALUE": "appreciation",
        "RAPPORT_SLACK_TEAM_ID": "T0RAP",
        "RAPPORT_SLACK_APP_ID": "A0RAP",
    })  # fmt: skip
    return env


@pytest.fixture
def app(slack_env: dict[str, str], settings: Settings) -> Iterator[TestClient]:
    """The recognition service with the Slack app's settings, people with Slack ids."""
    key = ensure_dev_key(settings)
    with TestClient(create(settings)) as client:
        auth = {"Authorization": f"Bearer {key}"}
        assert client.post("/v1/people/batch", json={"people": PEOPLE}, headers=auth).is_success
        yield client


def signed(body: bytes, at: float | None = None, secret: str = SECRET) -> dict[str, str]:
    """Headers as Slack signs a request (v0, timestamp, HMAC-SHA256)."""
    timestamp = str(int(at if at is not None else time.time()))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": str(signature)}


def command(
    app: TestClient,
    text: str,
    user: str = "U0ANN",
    response_url: str = "",
    team: str = "T0RAP",
    app_id: str = "A0RAP",
) -> Any:
    body = urlencode({"command": "/kudos", "text": text, "team_id": team, "user_id": user,
                      "api_app_id": app_id, "channel_id": "C0GEN", "trigger_id": f"{time.time()}",
                      "response_url": response_url}).encode()  # fmt: skip
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return app.post("/slack/commands", content=body, headers={**form, **signed(body)})


def event(app: TestClient, envelope: dict[str, Any], retry: int = 0) -> Any:
    """Post an event as Slack delivers it; Slack signs each delivery, a retry included."""
    body = json.dumps(envelope).encode()
    headers = {"Content-Type": "application/json", **signed(body, at=time.time() + retry)}
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return app.post("/slack/events", content=body, headers=headers)


def reaction(user: str, author: str, emoji: str = "tada", event_id: str = "Ev01") -> dict[str, Any]:
    item = {"type": "message", "channel": "C0GEN", "ts": "1700000000.000100"}
    return {"type": "event_callback", "team_id": "T0RAP", "api_app_id": "A0RAP",
            "event_id": event_id,
            "event": {"type": "reaction_added", "user": user, "reaction": emoji,
                      "item_user": author, "item": item}}  # fmt: skip


def recognitions(settings: Settings) -> list[dict[str, Any]]:
    records = asyncio.run(read_all(settings, topics.RECOGNITION))
    return [{"id": (ce := decode(r.headers, r.value)).id, **ce.data} for r in records]


def test_a_signed_kudos_is_one_recognition_answered_only_to_its_giver(
    app: TestClient, settings: Settings, slack: SlackStandIn
) -> None:
    text = ("<@U0BOB|bob> <@U0CID> #growth #Partnership thanks for unblocking the release "
            "&lt;!channel&gt; &amp; more")  # fmt: skip
    answer = command(app, text, response_url=f"{slack.url}/respond/1")
    assert answer.status_code == 200
    assert answer.json() == {
        "response_type": "ephemeral",
        "text": "Kudos recorded: you recognized <@U0BOB>, <@U0CID> for #growth, #partnership. "
        "Thank you!",
    }
    [given] = recognitions(settings)
    assert given["giver_id"] == "ann" and given["recipient_ids"] == ["bob", "cid"]
    assert given["values"] == ["growth", "partnership"] and given["channel"] == "slack"
    subjects: SubjectKeys = app.app.state.parts.subjects  # type: ignore[attr-defined]
    opened = unseal(given["sealed_message"], subjects.key,
                    message_context("/rapport/recognition/slack", given["id"]))  # fmt: skip
    assert opened == "thanks for unblocking the release <!channel> & more"  # data
    note = slack.wait_for("/respond/1")  # the public note, as the workspace wants it
    assert note["response_type"] == "in_channel"
    assert note["text"] == (
        "<@U0ANN> recognized <@U0BOB>, <@U0CID> for #growth, #partnership: "
        "thanks for unblocking the release &lt;!channel&gt; &amp; more"
    )


def test_every_refusal_is_a_helpful_message_to_the_giver_and_publishes_nothing(
    app: TestClient, settings: Settings
) -> None:
    refusals = {
        "#growth thanks": "Mention who you are thanking, for example `/kudos @someone",
        "<@U0ANN> #growth thanks me": "You can't give kudos to yourself",
        "<@U0BOB> #speed thanks": "#speed is not among Rapport's values. Use one to 3 of: "
        "#direction, #empowerment, #appreciation, #growth, #transparency, #partnership, "
        "#wellbeing.",
        "<@U0BOB> thanks": "Add one to 3 values: #direction",
        "<@U0BOB> #growth #direction #empowerment #wellbeing thanks": "At most 3 values",
        "<@U0BOB> #growth": "Add a few words about what they did",
        "<@U0BOB> #growth " + "x" * 2001: "Your message is 2,001 characters; the most is 2,000.",
        "<@U0ZED|zed> #growth thanks": "I can't find <@U0ZED> in Rapport's people directory. "
        "Ask whoever runs Rapport to add the Slack id `U0ZED` to their entry (column `slack_id`).",
        " ".join(f"<@U0P{i:02}>" for i in range(21)) + " #growth hi": "at most 20 people",
        "<@U0BOB> #growth \u200b\u200d\u202e\u2066 \u3164": "Add a few words about what they did",
    }
    for text, expected in refusals.items():
        answer = command(app, text)
        assert answer.status_code == 200
        assert answer.json()["response_type"] == "ephemeral"
        assert expected in answer.json()["text"], (text, answer.json())
    stranger = command(app, "<@U0BOB> #growth thanks", user="U0NEW")
    assert "I can't find you in Rapport's people directory" in stranger.json()["text"]
    assert "`U0NEW` to your entry" in stranger.json()["text"]
    assert recognitions(settings) == []


def test_forged_stale_and_replayed_requests_are_refused_and_change_nothing(
    app: TestClient, settings: Settings
) -> None:
    body = urlencode({"text": "<@U0BOB> #growth thanks", "team_id": "T0RAP",
                      "api_app_id": "A0RAP", "user_id": "U0ANN",
                      "channel_id": "C0GEN"}).encode()  # fmt: skip
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    attempts = {
        "unsigned": {},
        "forged": signed(body, secret="not-the-app-secret-at-all-1234567"),
        "stale": signed(body, at=time.time() - 6 * 60),
        "from the future": signed(body, at=time.time() + 6 * 60),
        "not a timestamp": {**signed(body), "X-Slack-Request-Timestamp": "soon"},
        "other body": signed(body + b"&text=more"),
    }
    for name, headers in attempts.items():
        answer = app.post("/slack/commands", content=body, headers={**form, **headers})
        assert answer.status_code == 401, name
    good = signed(body)
    assert app.post("/slack/commands", content=body, headers={**form, **good}).status_code == 200
    replay = app.post("/slack/commands", content=body, headers={**form, **good})
    assert replay.status_code == 401 and "replay" in replay.json()["message"]
    assert len(recognitions(settings)) == 1  # the one genuine request


def test_slacks_url_check_is_answered(app: TestClient) -> None:
    answer = event(
        app,
        {
            "type": "url_verification",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        },
    )
    assert answer.status_code == 200
    assert answer.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


def test_a_reaction_that_cannot_count_is_explained_to_its_author_through_the_web_api(
    app: TestClient, settings: Settings, slack: SlackStandIn
) -> None:
    assert event(app, reaction("U0ANN", "U0ZED")).status_code == 200
    note = slack.wait_for("/api/chat.postEphemeral")
    assert (note["channel"], note["user"]) == ("C0GEN", "U0ANN")
    assert "I can't find <@U0ZED> in Rapport's people directory" in note["text"]
    assert event(app, reaction("U0ANN", "U0BOB", emoji="thumbsup")).status_code == 200  # not it
    assert recognitions(settings) == []


def metric(url: str, team: str, value: str) -> float:
    return scrape(url).get(f'rapport_recognitions_total{{team="{team}",value="{value}"}}', 0.0)


@pytest.mark.slow
def test_commands_and_reactions_end_up_exact_on_metrics_and_retries_count_once(
    app: TestClient,
    settings: Settings,
    slack_env: dict[str, str],
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
    broker: Broker,
) -> None:
    port = free_port()
    spawn("aggregator", log=tmp_path / "aggregator.log")
    spawn("metrics", log=tmp_path / "metrics.log", extra_env={"RAPPORT_METRICS_PORT": str(port)})
    wait_for_port(port, timeout=60)
    url = f"http://127.0.0.1:{port}/metrics"
    # Two kudos commands, one of them sent again ("try again" after a broker failure).
    assert "recorded" in command(app, "<@U0BOB> #growth thanks for the review").json()["text"]
    assert "recorded" in command(app, "<@U0BOB> #growth thanks for the review").json()["text"]
    assert "recorded" in command(app, "<@U0CID> <@U0BOB> #growth thanks, both").json()["text"]
    # A reaction, delivered again by Slack, then taken off and put back: once.
    for retry, event_id in ((0, "Ev01"), (1, "Ev01"), (0, "Ev02")):
        assert event(app, reaction("U0CID", "U0ANN", event_id=event_id), retry).status_code == 200
    expected = {("t1", "growth"): 2, ("t2", "growth"): 1, ("t1", "appreciation"): 1}
    deadline = time.monotonic() + 60
    while {k: metric(url, *k) for k in expected} != expected and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # nothing late may push a figure past its exact value
    assert {k: metric(url, *k) for k in expected} == expected


@pytest.mark.own_broker
def test_with_the_broker_gone_a_command_says_try_again_in_time_and_an_event_gets_503(
    app: TestClient, broker: Broker
) -> None:
    broker.stop()
    asked = time.monotonic()
    answer = command(app, "<@U0BOB> #growth thanks")
    answered_in = time.monotonic() - asked
    assert answer.status_code == 200 and answer.json()["response_type"] == "ephemeral"
    assert "Rapport couldn't record your kudos just now" in answer.json()["text"]
    assert "send the same `/kudos` again in a minute: it will count once" in answer.json()["text"]
    assert answered_in < 3  # Slack shows "failed with the error operation_timeout" after 3 s
    assert event(app, reaction("U0CID", "U0ANN")).status_code == 503  # Slack sends it again


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "body"),
        (b'"x"', "body"),
        (b"null", "body"),
        (b"{}", "type"),
        (b'{"type": "url_verification", "challenge": 7}', "challenge"),
        (b'{"type": "event_callback", "event": "reaction_added"}', "event"),
        (
            b'{"type": "event_callback", "team_id": "T0RAP", "api_app_id": "A0RAP",'
            b' "event": {"type": "reaction_added", "item": "x"}}',
            "event.item",
        ),
        (
            b'{"type": "event_callback", "team_id": "T0RAP", "api_app_id": "A0RAP",'
            b' "event": {"type": "reaction_added", "reaction": "tada", "user": ["U0ANN"],'
            b' "item": {"type": "message"}}}',
            "event.user",
        ),
    ],
)
def test_a_signed_event_of_another_shape_is_a_422_naming_the_field(
    app: TestClient, settings: Settings, body: bytes, field: str
) -> None:
    headers = {"Content-Type": "application/json", **signed(body)}
    answer = app.post("/slack/events", content=body, headers=headers)
    assert answer.status_code == 422, answer.text
    assert field in {e["field"] for e in answer.json()["errors"]}, answer.json()
    not_json = b"{not json"
    answer = app.post("/slack/events", content=not_json, headers=signed(not_json))
    assert answer.status_code == 400 and answer.json()["error"] == "bad_request"
    assert recognitions(settings) == []


def test_a_command_without_its_fields_is_a_422_naming_them(app: TestClient) -> None:
    body = b"text=hello"
    answer = app.post("/slack/commands", content=body, headers=signed(body))
    assert answer.status_code == 422
    assert {e["field"] for e in answer.json()["errors"]} == {"team_id", "user_id"}


def test_requests_for_another_workspace_or_app_are_refused_and_count_nothing(
    app: TestClient, settings: Settings
) -> None:
    for team, app_id in (("T0OTHER", "A0RAP"), ("T0RAP", "A0OTHER"), ("", "")):
        answer = command(app, "<@U0BOB> #growth thanks", team=team, app_id=app_id)
        assert answer.status_code == 403, (team, app_id, answer.text)
    elsewhere = {**reaction("U0CID", "U0ANN"), "team_id": "T0OTHER"}
    assert event(app, elsewhere).status_code == 403
    other_app = {**reaction("U0CID", "U0ANN"), "api_app_id": "A0OTHER"}
    assert event(app, other_app).status_code == 403
    assert recognitions(settings) == []
    assert "recorded" in command(app, "<@U0BOB> #growth thanks").json()["text"]  # ours counts
    assert len(recognitions(settings)) == 1


def test_forged_signatures_never_lock_out_slack_nor_the_api(
    app: TestClient, settings: Settings
) -> None:
    body = b"team_id=T0RAP&user_id=U0ANN&text=hi"
    forged = [app.post("/slack/commands", content=body,
                       headers=signed(body, secret="not-the-app-secret-at-all-1234567"))
              for _ in range(300)]  # fmt: skip
    assert forged[-1].status_code == 429 and "Slack signatures" in forged[-1].json()["message"]
    # From the same address: a request Slack signed, and an API client's wrong key.
    assert "recorded" in command(app, "<@U0BOB> #growth thanks").json()["text"]
    wrong_key = app.post("/v1/recognitions", json={}, headers={"Authorization": "Bearer nope"})
    assert wrong_key.status_code == 401


def test_a_long_unbalanced_text_is_answered_at_once_and_never_stalls_the_service(
    slack_env: dict[str, str],
    settings: Settings,
    spawn: Callable[..., Popen[bytes]],
    tmp_path: Path,
) -> None:
    port = free_port()
    spawn("recognition", log=tmp_path / "recognition.log",
          extra_env={"RAPPORT_RECOGNITION_PORT": str(port)})  # fmt: skip
    wait_for_port(port, timeout=60)
    url = f"http://127.0.0.1:{port}"
    text = "<@U0BOB> #growth " + "<" * 40_000
    healthy: list[float] = []

    def poll_health() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for _ in range(20):
                started = time.monotonic()
                http.get("/healthz").raise_for_status()
                healthy.append(time.monotonic() - started)

    poller = threading.Thread(target=poll_health)
    poller.start()
    for i in range(5):  # five requests, not one five times (that would be a replay)
        body = urlencode({"team_id": "T0RAP", "api_app_id": "A0RAP", "user_id": "U0ANN",
                          "channel_id": f"C{i}", "text": text}).encode()  # fmt: skip
        answer = httpx.post(f"{url}/slack/commands", content=body, headers=signed(body),
                            timeout=10)  # fmt: skip
        assert answer.status_code == 200 and answer.json()["response_type"] == "ephemeral"
        assert answer.elapsed.total_seconds() < 1  # was 4.9 s at 12,000 characters
    poller.join()
    assert len(healthy) == 20 and max(healthy) < 1
