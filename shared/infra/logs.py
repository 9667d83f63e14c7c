"""Logging that keeps the line that matters in sight.

With its broker gone, aiokafka logs the same few errors ten times a second per
connection (measured: 450 lines in the 15 s before a worker stopped). :class:`Repeats`
lets each of those lines through once every ``every_s`` seconds, saying how many like it
were held back meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

NOISY = ("aiokafka",)  # loggers whose warnings and errors repeat


class Repeats(logging.Filter):
    """Once per ``every_s`` for each (logger, level, message template) of ``NOISY``."""

    def __init__(self, every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(NOISY):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        since, held = self._seen.get(key, (None, 0))
        if since is not None and now - since < self.every_s:
            self._seen[key] = (since, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held and since is not None:
            record.msg = f"{record.msg} [and {held} more like it in {now - since:.0f} s]"
        return True


def quiet_repeats(logger: logging.Logger | None = None) -> None:
    """Put a :class:`Repeats` filter on every handler of ``logger`` (the root one)."""
    repeats = Repeats()
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(repeats)
