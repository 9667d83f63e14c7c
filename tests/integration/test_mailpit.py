"""A digest through Mailpit, a mail server people use, read back through its HTTP API.

Mailpit (`make test` builds it with `go install`) parses what it receives as mail clients
do: the test checks the headers clients and providers look at, that the chart is an
inline part and not an attachment, Mailpit's own check of the List-Unsubscribe header and
its HTML check (caniemail.com's data), and that the one-click unsubscribe in the mail
stops that manager's digest, across a restart, until they start it again.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from services.digest.api import create as create_digest
from services.digest.service import week_label
from services.recognition.api import create as create_recognition
from shared.infra.auth import ensure_dev_key
from shared.infra.broker import free_port
from shared.infra.settings import Settings
from tests.support import wait_until
from tests.support.people import as_json, team

MAILPIT = Path(sys.executable).parent / "mailpit"
MIN_HTML_SUPPORTED = 97.0  # percent, Mailpit's "Supported" total


class Mailpit:
    def __init__(self, smtp_port: int, api: httpx.Client) -> None:
        self.smtp_port = smtp_port
        self.api = api

    def messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api.get("/api/v1/messages").json()["messages"]
        return found

    def get(self, path: str) -> Any:
        answer = self.api.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture
def mailpit(tmp_path: Path) -> Iterator[Mailpit]:
    assert MAILPIT.exists(), f"{MAILPIT} is missing: `make test` builds it with go install"
    smtp, http = free_port(), free_port()
    proc = subprocess.Popen(
        [str(MAILPIT), "--smtp", f"127.0.0.1:{smtp}", "--listen", f"127.0.0.1:{http}",
         "--database", str(tmp_path / "mailpit.db"), "--disable-version-check", "--quiet"],
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{http}", timeout=10) as api:

            def up() -> bool:
                try:
                    return api.get("/api/v1/info").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, timeout=20)
            yield Mailpit(smtp, api)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


PEOPLE = as_json(team("alpha", "lee", ["ann", "bob", "cat", "dan"]))  # k = 5: team figures


def weeks_ago(n: int) -> str:
    return week_label(datetime.now(UTC).date() - timedelta(days=7 * n))


def test_a_digest_as_mail_clients_see_it_and_its_one_click_unsubscribe(
    settings: Settings, mailpit: Mailpit
) -> None:
    headers = {"Authorization": f"Bearer {ensure_dev_key(settings)}"}
    with TestClient(create_recognition(settings), headers=headers) as http:
        answer = http.post("/v1/people/batch", json={"people": PEOPLE})
        assert answer.status_code == 202, answer.text
    on_mailpit = settings.model_copy(update={
        "smtp_host": "127.0.0.1", "smtp_port": mailpit.smtp_port,
        "mail_from": "Rapport <rapport@mail.example.org>",
    })  # fmt: skip

    def run(week: str) -> str:
        with TestClient(create_digest(on_mailpit), headers=headers) as digest:
            answer = digest.post("/v1/digests/run", params={"week": week})
        assert answer.status_code == 200, answer.text
        outcome: str = answer.json()["outcomes"]["lee"]
        return outcome

    assert run(weeks_ago(1)) == "sent"
    [summary] = mailpit.messages()
    message = mailpit.get(f"/api/v1/message/{summary['ID']}")
    raw = mailpit.get(f"/api/v1/message/{summary['ID']}/headers")

    # Headers: a known zone, a fully qualified Message-ID, recurring mail a program sent.
    assert raw["Date"][0].endswith("+0000"), raw["Date"]
    assert message["MessageID"] == f"digest.{weeks_ago(1)}.lee@mail.example.org"
    assert raw["Auto-Submitted"] == ["auto-generated"]
    assert message["Subject"] == f"alpha, {weeks_ago(1)}: 0 recognitions"
    # The chart: one inline part, referenced by the HTML; nothing listed as an attachment.
    assert message["Attachments"] == []
    [chart] = message["Inline"]
    assert chart["ContentType"] == "image/png"
    assert f'src="cid:{chart["ContentID"]}"' in message["HTML"]
    # Mailpit's own reading of the unsubscribe headers (RFC 2369, RFC 8058).
    unsubscribe = message["ListUnsubscribe"]
    assert unsubscribe["Errors"] == "" and unsubscribe["HeaderPost"] == "List-Unsubscribe=One-Click"
    [link] = unsubscribe["Links"]
    # What mail clients support of the HTML, by caniemail.com's data.
    check = mailpit.get(f"/api/v1/message/{summary['ID']}/html-check")
    supported = check["Total"]["Supported"]
    assert supported >= MIN_HTML_SUPPORTED, [w["Title"] for w in check["Warnings"]]

    # The link as a mail client finds it, on the digest service.
    assert link.startswith(on_mailpit.digest_url + "/")
    target = urlsplit(link)
    path = f"{target.path}?{target.query}"
    with TestClient(create_digest(on_mailpit)) as digest:
        page = digest.get(path)  # a link scanner, or the manager opening it: no change
        assert page.status_code == 200 and "Stop the weekly digest" in page.text
        forged = digest.post(path.replace("lee?", "ann?"), content="List-Unsubscribe=One-Click")
        assert forged.status_code == 403, forged.text  # one manager's link is not another's
        form = {"Content-Type": "application/x-www-form-urlencoded"}  # as RFC 8058 sends it
        one_click = digest.post(path, content="List-Unsubscribe=One-Click", headers=form)
        assert one_click.status_code == 200 and "Receive it again" in one_click.text
    # A new service (as after a restart) honours it: no digest for lee, nothing sent.
    assert run(weeks_ago(2)) == "unsubscribed"
    assert len(mailpit.messages()) == 1
    # Until lee starts it again, from the page the link opened.
    with TestClient(create_digest(on_mailpit)) as digest:
        again = digest.post(path.replace("/unsubscribe/", "/subscribe/"))
        assert again.status_code == 200 and "Stop the weekly digest" in again.text
    assert run(weeks_ago(3)) == "sent"
    assert len(mailpit.messages()) == 2
