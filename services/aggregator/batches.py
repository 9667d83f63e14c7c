"""How a stage runs: a batch at a time, acked only once done, kept apart from rebalances."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import faust
from faust.types import Message

from . import transport
from .metrics import AggregatorMetrics

log = logging.getLogger(__name__)
IN_FLIGHT = 2  # batches of a stage processed, not yet acknowledged by the broker
# Items of a batch processed between two turns of the event loop (a stage's batch, or a
# round of snapshots, can take seconds): the producer sends and reads its acks between,
# so that the acks a stage waits for are not held up behind another stage's work.
TURN = 250
Process = Callable[[list[Message]], Awaitable[tuple[list[Awaitable[Any]], int]]]


class Gate:
    """Keeps batches and rebalances apart.

    On a rebalance, faust re-reads every table from its changelog and seeks the streams
    back to their committed offsets; it does not wait for batches. A batch still
    writing then would be applied to state the re-read replaces, and its offsets
    committed without its effect. So the revocation waits for the batches in flight
    (from their start until the broker has acknowledged their output), and no batch
    starts until the tables are recovered.
    """

    def __init__(self) -> None:
        self._count = 0
        self._last = 0.0  # when a batch last entered or left (time.monotonic)
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    async def enter(self) -> None:
        await self._open.wait()
        self._count += 1
        self._last = time.monotonic()
        self._idle.clear()

    def leave(self) -> None:
        self._count -= 1
        self._last = time.monotonic()
        if not self._count:
            self._idle.set()

    async def close(self) -> None:
        self._open.clear()
        await self._idle.wait()

    def open(self) -> None:
        self._open.set()

    def busy(self, within: float) -> bool:
        """Whether a batch is in flight, or was ``within`` seconds ago."""
        return self._count > 0 or time.monotonic() - self._last < within


async def in_batches(
    app: faust.App,
    lane: asyncio.Queue[list[Message]],
    process: Process,
    stage: str,
    metrics: AggregatorMetrics,
    gate: Gate,
) -> None:
    """Feed the messages of ``lane`` to ``process`` a batch at a time; ack a batch only
    once it is done.

    ``process`` returns the sends it made and how many items it handled (a record of
    team facts holds many); the batch is done when the broker has acknowledged all of
    them, so an offset is never committed for output that a crash could still lose
    (faust's own flush before a commit gives up after 0.1 s). The next batch is
    processed meanwhile (up to ``IN_FLIGHT`` batches, acked in order). A worker that
    cannot finish a batch (an error, or a stop in the middle) exits on the spot, before
    its offsets are acked, and the batch is delivered again to whoever takes over.
    """
    consumer = app.consumer
    in_flight: deque[asyncio.Task[None]] = deque()
    last: asyncio.Task[None] | None = None

    async def finish(
        before: asyncio.Task[None] | None,
        messages: list[Message],
        sent: list[Awaitable[Any]],
        handled: int,
    ) -> None:
        with exit_unless_done():
            await asyncio.gather(*sent)
            if before is not None:
                # Acked in batch order: faust would commit a later batch's offsets
                # past an earlier batch still waiting for the broker.
                await before
        gate.leave()
        for message in messages:
            consumer.ack(message)
        metrics.events.labels(stage).inc(handled)
        ends = {m.tp: m.offset for m in messages}
        lag = sum(max(0, consumer.highwater(tp) - offset - 1) for tp, offset in ends.items())
        metrics.consumer_lag.labels(stage).set(lag)

    while True:
        messages = await lane.get()
        await gate.enter()
        with exit_unless_done():
            # Taken before a rebalance: skip what is now another worker's.
            assigned = consumer.assignment()
            taken = len(messages)
            messages = [m for m in messages if m.tp in assigned]
            if len(messages) < taken:
                log.info(
                    "%s: skipped %d records of revoked partitions", stage, taken - len(messages)
                )
            sent, handled = await process(messages)
        last = asyncio.create_task(finish(last, messages, sent, handled))
        in_flight.append(last)
        while in_flight and (len(in_flight) >= IN_FLIGHT or in_flight[0].done()):
            await in_flight.popleft()


@contextlib.contextmanager
def exit_unless_done() -> Iterator[None]:
    """Exit the worker, before anything is acked, if the block does not finish."""
    try:
        yield
    except asyncio.CancelledError:
        log.warning("stopped in the middle of a batch; it will be processed again")
        os._exit(transport.EXIT_CUT_SHORT)
    except Exception:
        log.exception("a batch failed; exiting so that it is processed again")
        os._exit(1)
