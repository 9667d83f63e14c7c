"""One call erases a person everywhere (issue 30, part 2), on the whole stack of `rapport run`:
after the erasure of a giver, a recipient and a respondent to an open round, nothing of
their names, addresses or what was said to or by them is readable on any topic, in any
file under the var directory (the local outbox included) or in the platform's log;
/metrics is unchanged; the digest no longer names them; the respondent's answer is
withdrawn from the round, and the master key no longer opens it where it stays sealed (the
raw survey topics). Then `rapport replay` (part 3) builds the same snapshots again from
the log, and the platform switches to them."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from shared.contract import topics
from shared.contract.codec import decode
from shared.contract.events import SURVEY_RESPONSE
from shared.infra.settings import SealingSettings, Settings
from shared.infra.subjects import ResponseKeys
from tests.support import ROOT, wait_until
from tests.support.kafka import read_all
from tests.support.metrics import parse
from tests.support.people import as_json, team

PEOPLE = as_json([*team("alpha", "lead", ["ann", "bob", "dan", "eve", "fay", "gus", "hal"]),
                  *team("beta", "bea", ["cal", "cy", "col", "cor"])])  # fmt: skip
# Who gives to whom, and what they say: every text unique, so a scan finds only it.
KUDOS = [
    ("k1", "bob", "ann", "Bob to Ann: the zebra migration went without a hitch"),
    ("k2", "lead", "ann", "Lead to Ann: your quokka review saved us a week"),
    ("k3", "ann", "cal", "Ann to Cal: thanks for the walrus pairing"),
    ("k4", "eve", "fay", "Eve to Fay: the narwhal runbook is excellent"),  # about neither
]
RESPONDENTS = ("lead", "dan", "eve", "fay", "gus", "hal")  # six: five stay when Dan goes
ERASED = ("ann", "bob", "dan")
NEEDLES = ["Ann Person", "ann@x.io", "Bob Person", "bob@x.io", "Dan Person", "dan@x.io",
           *(text for _, giver, to, text in KUDOS if {giver, to} & set(ERASED))]  # fmt: skip
KEPT = "narwhal runbook"  # sealed with Eve's and Fay's keys: not on any topic in plain text


def test_an_erased_giver_and_recipient_are_gone_from_every_topic_file_and_digest(
    stack: dict[str, str], tmp_path: Path
) -> None:
    api = f"http://127.0.0.1:{stack['RAPPORT_RECOGNITION_PORT']}"
    feedback = f"http://127.0.0.1:{stack['RAPPORT_FEEDBACK_PORT']}"
    digest = f"http://127.0.0.1:{stack['RAPPORT_DIGEST_PORT']}"
    metrics = f"http://127.0.0.1:{stack['RAPPORT_METRICS_PORT']}/metrics"
    var = Path(stack["RAPPORT_VAR_DIR"])
    key_file = var / "dev-api-key"
    wait_until(lambda: all(ok(f"{u}/readyz") for u in (api, feedback, digest))
               and key_file.exists(), timeout=60)  # fmt: skip
    headers = {"Authorization": f"Bearer {key_file.read_text().strip()}"}
    with httpx.Client(headers=headers, timeout=10) as client:
        assert client.post(f"{api}/v1/people/batch", json={"people": PEOPLE}).status_code == 202
        for event_id, giver, to, text in KUDOS:
            body = {"event_id": event_id, "giver_id": giver, "recipient_ids": [to],
                    "values": ["growth"], "message": text}  # fmt: skip
            assert client.post(f"{api}/v1/recognitions", json=body).status_code == 202
        assert client.post(f"{feedback}/v1/survey-rounds", json={"survey_id": "r1"}).is_success
        items = [i["id"] for i in client.get(f"{feedback}/v1/questions").json()["items"]]
        for person in RESPONDENTS:
            body = {"survey_id": "r1", "respondent_id": person, "answers": dict.fromkeys(items, 4),
                    "comment": comment(person)}  # fmt: skip
            assert client.post(f"{feedback}/v1/survey-responses", json=body).status_code == 202
        before = wait_until(lambda: counted(metrics), timeout=60)
        # The digest service sends last week's digests (RAPPORT_DIGEST_HOUR=0): the lead's
        # names their reports, Ann and Bob among them.
        outbox = var / "outbox"
        wait_until(lambda: any("Bob Person" in readable(p) for p in outbox.glob("*.eml")),
                   timeout=90)  # fmt: skip
        assert found(var, stack, tmp_path, NEEDLES[:1])  # the scan sees what is there
        # Answers to an open round are sealed wherever they are; their keys open them.
        assert not found(var, stack, tmp_path, [comment(p) for p in RESPONDENTS])
        assert sorted(asyncio.run(openable(stack))) == sorted(map(comment, RESPONDENTS))

        for person in ERASED:
            erased = client.post(f"{api}/v1/people/{person}/erasure")
            assert erased.status_code == 202, erased.text
            assert erased.json() == {"person_id": person, "keys_destroyed": 1, "open_rounds": 1}
        # The digest service purges its outbox copies within a round of its schedule.
        wait_until(lambda: not found(var, stack, tmp_path, NEEDLES), timeout=90)
        # Every figure stays as it was: their recognitions still count for the teams.
        assert counted(metrics) == before
        preview = client.get(f"{digest}/v1/digests/lead/preview")
        assert preview.status_code == 200
        assert "Eve Person" in preview.text and "someone whose data was erased" in preview.text
        assert not any(n in preview.text for n in NEEDLES)
        assert client.get(f"{digest}/v1/digests/ann/preview").status_code == 404
        # Dan's answer is withdrawn, its key destroyed: nothing opens it any more, and the
        # round closes with the other five.
        assert comment("dan") not in asyncio.run(openable(stack))
        assert client.post(f"{feedback}/v1/survey-rounds/r1/close").status_code == 202
    participation = 'rapport_trust_participation_ratio{team="alpha",window="28d"}'
    wait_until(lambda: (counted(metrics) or {}).get(participation) == 5 / 8, timeout=60)
    published = asyncio.run(latest_comments(stack))
    assert sorted(published) == sorted(comment(p) for p in RESPONDENTS if p != "dan")
    assert not found(var, stack, tmp_path, [KEPT])

    # The whole log again, after the erasures (issue 30, part 3): the same snapshots, in
    # new topics, and /metrics switched to them unchanged.
    figures = counted(metrics)
    first = asyncio.run(snapshots_of(stack, topics.Generation()))
    replayed = subprocess.run([sys.executable, "-m", "services.cli", "replay"],
                              env={**os.environ, **stack}, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert re.search(r"replay to generation 2: [\d,]+ of [\d,]+ source records", replayed.stdout)
    assert "generation 2 is current" in replayed.stdout
    assert asyncio.run(snapshots_of(stack, topics.Generation(2))) == first
    log = tmp_path / "run.log"
    wait_until(lambda: "figures now from generation 2" in log.read_text(), timeout=60)
    assert counted(metrics) == figures
    # The platform's own worker stopped, and started again in generation 2, counts on.
    body = {"event_id": "k5", "giver_id": "eve", "recipient_ids": ["gus"], "values": ["growth"],
            "message": "Eve to Gus: after the replay"}  # fmt: skip
    with httpx.Client(headers=headers, timeout=10) as client:
        assert client.post(f"{api}/v1/recognitions", json=body).status_code == 202

    def total() -> float:
        samples = parse(httpx.get(metrics).text)
        return sum(v for k, v in samples.items() if k.startswith("rapport_recognitions_total{"))

    wait_until(lambda: total() == len(KUDOS) + 1, timeout=90)
    assert "generation 2 is current now (this worker's is 1): stopping" in log.read_text()


def comment(person: str) -> str:
    return f"A comment from {person}: more pairing, please"


async def snapshots_of(
    stack: dict[str, str], generation: topics.Generation
) -> dict[bytes, dict[str, object]]:
    """Every team's latest snapshot in ``generation``, but for when it was made."""
    records = await read_all(broker_settings(stack), generation.snapshots)
    latest = {r.key: decode(r.headers, r.value).data for r in records}
    return {k: {f: v for f, v in d.items() if f != "generated_at"} for k, d in latest.items()}


async def openable(stack: dict[str, str]) -> list[str]:
    """The comment of every answer on the survey topic that opens with its response key
    (what whoever holds the master key can read)."""
    settings = SealingSettings(
        kafka_bootstrap_servers=stack.get("RAPPORT_KAFKA_BOOTSTRAP_SERVERS"),
        embedded_broker_port=int(stack.get("RAPPORT_EMBEDDED_BROKER_PORT", "9092")),
        var_dir=Path(stack["RAPPORT_VAR_DIR"]),
    )
    keys = ResponseKeys(settings)
    await keys.start()
    try:
        out = []
        for r in await read_all(settings, topics.SURVEY):
            ce = decode(r.headers, r.value)
            if ce.type != SURVEY_RESPONSE:
                continue
            data = ce.data
            opened = keys.open(data["sealed_answers"], data["survey_id"], data["respondent"])
            if opened is not None and opened.comment is not None:
                out.append(opened.comment)
        return out
    finally:
        await keys.stop()


async def latest_comments(stack: dict[str, str]) -> list[str]:
    """The comments in alpha's latest snapshot, as published."""
    records = await read_all(broker_settings(stack), topics.SNAPSHOTS)
    [latest] = [r for r in records if r.key == b"alpha"][-1:]
    data = decode(latest.headers, latest.value).data
    return [c for block in data["trust"]["comments"] for c in block["comments"]]


def counted(metrics: str) -> dict[str, float] | None:
    """Every team figure on /metrics, once every kudos is counted and the connection
    figures (computed in rounds of their own) have them too: Dan, Gus and Hal isolated."""
    try:
        samples = parse(httpx.get(metrics).text)
    except httpx.HTTPError:
        return None
    teams = {k: v for k, v in samples.items() if 'team="' in k}
    total = sum(v for k, v in teams.items() if k.startswith("rapport_recognitions_total{"))
    isolated = teams.get('rapport_connection_isolated_people{team="alpha",window="28d"}')
    return teams if total == len(KUDOS) and isolated == 3 else None


def found(var: Path, stack: dict[str, str], tmp_path: Path, needles: list[str]) -> list[str]:
    """Where any of ``needles`` can be read: a topic, a file under ``var`` (mail decoded),
    the platform's log."""
    places = {f"topic {t}": text for t, text in asyncio.run(every_topic(stack)).items()}
    for path in [*var.rglob("*"), tmp_path / "run.log"]:
        if path.is_file():
            places[str(path)] = readable(path)
    return [f"{n!r} in {place}" for place, text in places.items() for n in needles if n in text]


def broker_settings(stack: dict[str, str]) -> Settings:
    return Settings(
        kafka_bootstrap_servers=stack.get("RAPPORT_KAFKA_BOOTSTRAP_SERVERS"),
        embedded_broker_port=int(stack.get("RAPPORT_EMBEDDED_BROKER_PORT", "9092")),
    )


async def every_topic(stack: dict[str, str]) -> dict[str, str]:
    """Every record of every topic (keys, headers, values), as text."""
    settings = broker_settings(stack)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        names = sorted(await admin.list_topics())
    finally:
        await admin.close()
    out = {}
    for name in names:
        records = await read_all(settings, name)
        out[name] = "\n".join(
            b" ".join([r.key or b"", *(v for _, v in r.headers), r.value or b""]).decode(
                "utf-8", "replace"
            )
            for r in records
        )
    return out


def readable(path: Path) -> str:
    """A file as a person could read it: a mail decoded (headers and every text part)."""
    data = path.read_bytes()
    if path.suffix != ".eml":
        return data.decode("utf-8", "replace")
    message = email.message_from_bytes(data, policy=email.policy.default)
    parts = [str(v) for v in message.values()]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            parts.append(str(part.get_content()))  # type: ignore[attr-defined]
    return "\n".join(parts)


def ok(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False
