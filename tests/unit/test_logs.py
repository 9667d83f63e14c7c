"""A broker gone: aiokafka's repeated errors come through once a while, with a count."""

from __future__ import annotations

import logging

from shared.infra.logs import Repeats


def test_repeated_errors_pass_once_per_interval_with_how_many_were_held() -> None:
    now = [0.0]
    repeats = Repeats(every_s=30, clock=lambda: now[0])

    def passes(name: str, msg: str, level: int = logging.ERROR) -> str | None:
        record = logging.LogRecord(name, level, __file__, 1, msg, ("127.0.0.1:9",), None)
        return record.getMessage() if repeats.filter(record) else None

    template = "Unable connect to node %s"
    assert passes("aiokafka.conn", template) == "Unable connect to node 127.0.0.1:9"
    assert [passes("aiokafka.conn", template) for _ in range(99)] == [None] * 99
    assert passes("aiokafka.conn", "Failed fetch %s") is not None  # another line: its own
    assert passes("aiokafka.conn", template, logging.INFO) is not None  # not a warning
    assert passes("services.aggregator.app", template) is not None  # Rapport's own: all
    now[0] = 31.0
    assert passes("aiokafka.conn", template) == (
        "Unable connect to node 127.0.0.1:9 [and 99 more like it in 31 s]"
    )
    assert passes("aiokafka.conn", template) is None
