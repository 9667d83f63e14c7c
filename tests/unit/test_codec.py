"""Our hand-written binary-mode codec agrees with the official CloudEvents SDK."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from shared.codec import CloudEvent, CodecError, decode, encode

EVENT = CloudEvent(
    id="e-1",
    source="/rapport/recognition/dev",
    type="rapport.recognition.given.v1",
    time=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
    data={"giver_id": "p1", "recipient_ids": ["p2"]},
)


def test_sdk_parses_our_records() -> None:
    headers, value = encode(EVENT)
    message = sdk_kafka.KafkaMessage(headers=dict(headers), key=b"p1", value=value)
    parsed = sdk_kafka.from_binary(message, JSONFormat(), SdkEvent)
    assert parsed.get_id() == "e-1"
    assert parsed.get_source() == "/rapport/recognition/dev"
    assert parsed.get_type() == "rapport.recognition.given.v1"
    assert parsed.get_time() == EVENT.time
    assert parsed.get_data() == EVENT.data


def test_we_parse_sdk_records() -> None:
    event = SdkEvent(
        attributes={
            "id": "x-9",
            "source": "/slack-bot",
            "type": "rapport.recognition.given.v1",
            "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "datacontenttype": "application/json",
        },
        data={"a": 1},
    )
    message = sdk_kafka.to_binary(event, JSONFormat())
    ours = decode(list(message.headers.items()), message.value)
    assert (ours.id, ours.source, ours.data) == ("x-9", "/slack-bot", {"a": 1})
    assert ours.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([], b"{}", "ce_specversion"),
        ([("ce_specversion", b"1.0"), ("ce_id", b"1")], b"{}", "ce_source, ce_type"),
        (
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t")],
            b"{not json",
            "unreadable",
        ),
        (
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t"),
             ("content-type", b"text/plain")],
            b"x",
            "not JSON",
        ),
    ],
)  # fmt: skip
def test_bad_records_are_rejected_with_a_reason(
    headers: list[tuple[str, bytes]], value: bytes, reason: str
) -> None:
    with pytest.raises(CodecError, match=reason):
        decode(headers, value)
