"""CloudEvents 1.0 on Kafka: binary content mode (attributes in ``ce_*`` headers, JSON
data) as Rapport writes it; binary or structured mode (the whole event as JSON, content
type ``application/cloudevents+json``) as other producers write it.

Hand-written because it sits on every hot path; ``tests/unit/test_codec.py`` proves the
records round-trip through the official ``cloudevents`` SDK in both directions.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

Headers = list[tuple[str, bytes]]
SPECVERSION = b"1.0"
CONTENT_TYPE = b"application/json"
STRUCTURED = b"application/cloudevents+json"
DLQ_REASON = "rapport_dlq_reason"
MAX_REASON = 1000  # bytes of a DLQ reason header


class CodecError(ValueError):
    """A record is not a valid binary-mode CloudEvent with JSON data."""


@dataclass(slots=True)  # not frozen: that makes decoding one a fifth slower
class CloudEvent:
    id: str
    source: str
    type: str
    time: datetime
    data: Any


@functools.lru_cache(maxsize=256)  # a batch's events share a time: formatted once, not twice each
def format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode(event: CloudEvent) -> tuple[Headers, bytes]:
    """Return the Kafka headers and value of ``event``."""
    headers: Headers = [
        ("ce_specversion", SPECVERSION),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("ce_time", format_time(event.time).encode()),
        ("content-type", CONTENT_TYPE),
    ]
    return headers, orjson.dumps(event.data)


def _mime(content_type: bytes | str | None) -> bytes:
    raw = content_type.encode() if isinstance(content_type, str) else content_type
    return (raw or CONTENT_TYPE).split(b";")[0].strip().lower()


def _is_json(mime: bytes) -> bool:
    """JSON as the CloudEvents JSON format counts it: ``application/json``, ``text/json``
    or any type with the ``+json`` suffix (RFC 6839)."""
    return mime in (CONTENT_TYPE, b"text/json") or mime.endswith(b"+json")


def _time(raw: bytes | str | None) -> datetime:
    """``ce_time``: RFC 3339, so with its offset; a time without one is refused (it
    would be read in whatever zone a worker runs in)."""
    if raw is None:
        return datetime.now(UTC)
    text = raw.decode() if isinstance(raw, bytes) else raw
    time = datetime.fromisoformat(text)
    if time.tzinfo is None:
        raise CodecError(f"ce_time {text!r} has no time-zone offset (RFC 3339: Z or +01:00)")
    return time


def decode(headers: Sequence[tuple[str, bytes]] | None, value: bytes | None) -> CloudEvent:
    """Parse a record; raise :class:`CodecError` naming what is wrong."""
    attrs = dict(headers or ())
    if "ce_specversion" not in attrs and _mime(attrs.get("content-type")) == STRUCTURED:
        return _structured(value)
    if attrs.get("ce_specversion") != SPECVERSION:
        raise CodecError("ce_specversion header missing or not 1.0")
    missing = [h for h in ("ce_id", "ce_source", "ce_type") if not attrs.get(h)]
    if missing:
        raise CodecError(f"missing header(s): {', '.join(missing)}")
    content_type = _mime(attrs.get("content-type"))
    if not _is_json(content_type):
        raise CodecError(f"content-type {content_type.decode(errors='replace')!r} is not JSON")
    try:
        time = _time(attrs.get("ce_time"))
        data = orjson.loads(value) if value is not None else None
        ids = attrs["ce_id"].decode(), attrs["ce_source"].decode(), attrs["ce_type"].decode()
        return CloudEvent(*ids, time, data)
    except CodecError:
        raise
    except (UnicodeDecodeError, ValueError) as exc:
        raise CodecError(f"unreadable record: {exc}") from None


def _structured(value: bytes | None) -> CloudEvent:
    """A structured-mode record: the event's attributes and data in one JSON object."""
    try:
        event = orjson.loads(value or b"")
    except ValueError as exc:
        raise CodecError(f"unreadable record: {exc}") from None
    if not isinstance(event, dict):
        raise CodecError("a structured CloudEvent must be a JSON object")
    if event.get("specversion") != SPECVERSION.decode():
        raise CodecError("specversion missing or not 1.0")
    missing = [a for a in ("id", "source", "type")
               if not isinstance(event.get(a), str) or not event[a]]  # fmt: skip
    if missing:
        raise CodecError(f"missing attribute(s): {', '.join(missing)}")
    content_type = _mime(event.get("datacontenttype"))
    if "data_base64" in event or not _is_json(content_type):
        raise CodecError(f"data of {content_type.decode(errors='replace')!r} is not JSON")
    raw_time = event.get("time")
    if raw_time is not None and not isinstance(raw_time, str):
        raise CodecError("time must be a string (RFC 3339)")
    try:
        time = _time(raw_time)
    except ValueError as exc:
        raise CodecError(f"unreadable time: {exc}") from None
    return CloudEvent(event["id"], event["source"], event["type"], time, event.get("data"))


def dlq_reason(reason: str) -> tuple[str, bytes]:
    """The DLQ reason header: one line (a validation error spans several), at most
    ``MAX_REASON`` bytes, so that tools that print headers show it whole."""
    line = " ".join(reason.split()).encode()
    return DLQ_REASON, line[:MAX_REASON].decode(errors="ignore").encode()
