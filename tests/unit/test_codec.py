"""Our hand-written binary-mode codec agrees with the official CloudEvents SDK."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent as SdkEvent

from shared.contract.codec import DLQ_REASON, CloudEvent, CodecError, decode, dlq_reason, encode

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
        (  # a time without its offset: in which zone would a worker read it?
            [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t"),
             ("ce_time", b"2026-11-20T09:30:00")],
            b"{}",
            "no time-zone offset",
        ),
        ([("content-type", b"application/cloudevents+json")], b"[1]", "JSON object"),
        ([("content-type", b"application/cloudevents+json")],
         b'{"specversion": "1.0", "id": "1", "source": "s"}', "type"),
        ([("content-type", b"application/cloudevents+json")],
         b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t",'
         b' "time": "2026-11-20T09:30:00"}', "no time-zone offset"),
        ([("content-type", b"application/cloudevents+json")],
         b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "eA=="}',
         "not JSON"),
    ],
)  # fmt: skip
def test_bad_records_are_rejected_with_a_reason(
    headers: list[tuple[str, bytes]], value: bytes, reason: str
) -> None:
    with pytest.raises(CodecError, match=reason):
        decode(headers, value)


@pytest.mark.parametrize(
    "content_type",
    [b"application/json; charset=utf-8", b"application/cloudevents+json",
     b"application/vnd.example.kudos+json", b"text/json", b"Application/JSON"],
)  # fmt: skip
def test_every_json_content_type_of_the_cloudevents_json_format_is_json(
    content_type: bytes,
) -> None:
    headers = [*(h for h in encode(EVENT)[0] if h[0] != "content-type"),
               ("content-type", content_type)]  # fmt: skip
    assert decode(headers, encode(EVENT)[1]).data == EVENT.data


def test_we_parse_sdk_structured_records() -> None:
    event = SdkEvent(
        attributes={"id": "s-1", "source": "/survey-tool", "type": "rapport.recognition.given.v1",
                    "time": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                    "datacontenttype": "application/json"},
        data={"a": [1, 2]},
    )  # fmt: skip
    message = sdk_kafka.to_structured(event, JSONFormat())
    ours = decode(list(message.headers.items()), message.value)
    assert (ours.id, ours.source, ours.type) == ("s-1", "/survey-tool", event.get_type())
    assert ours.time == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and ours.data == {"a": [1, 2]}


def test_a_dlq_reason_is_one_line_of_at_most_1000_bytes() -> None:
    name, value = dlq_reason("2 validation errors\n  giver_id\n    Field required\r\n" + "é" * 600)
    assert name == DLQ_REASON
    assert b"\n" not in value and b"\r" not in value and len(value) <= 1000
    assert value.startswith(b"2 validation errors giver_id Field required ")
    value.decode()  # never cut in the middle of a character
