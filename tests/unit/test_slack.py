"""What a /kudos says, read as Slack sends it; the app manifest an admin pastes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import yaml

from services.recognition import slack
from services.recognition.api import create
from services.recognition.settings import RecognitionSettings

ROOT = Path(__file__).resolve().parents[2]


def test_mentions_values_and_message_are_read_as_slack_escapes_them() -> None:
    kudos = slack.Kudos.parse(
        "<@U0BOB|bob> thanks <@W0CID> for #Growth in <#C0GEN|general>, see "
        "<https://x.io/pr/1|the PR> &amp; <https://x.io> &lt;3 <!here> #growth #team-work"
    )
    assert kudos.mentions == ("U0BOB", "W0CID")
    assert kudos.values == ("growth", "team-work")  # once each, as Rapport names them
    assert kudos.message == "thanks for in general, see the PR & https://x.io <3"


def test_text_goes_back_into_slack_as_text() -> None:
    assert slack.escape("<!channel> & <@U0BOB>") == "&lt;!channel&gt; &amp; &lt;@U0BOB&gt;"
    assert slack.unescape(slack.escape("a <b> & c")) == "a <b> & c"


def test_the_manifest_points_slack_at_the_services_routes() -> None:
    manifest = yaml.safe_load((ROOT / "deploy" / "slack" / "manifest.yml").read_text())
    [kudos] = manifest["features"]["slash_commands"]
    assert kudos["command"] == "/kudos" and kudos["should_escape"] is True
    events = manifest["settings"]["event_subscriptions"]
    assert events["bot_events"] == ["reaction_added"]
    app = create(RecognitionSettings(environment="development"))
    assert urlparse(kudos["url"]).path == app.url_path_for(slack.command.__name__)
    assert urlparse(events["request_url"]).path == app.url_path_for(slack.events.__name__)
    assert {"commands", "chat:write", "reactions:read"} <= set(
        manifest["oauth_config"]["scopes"]["bot"]
    )
