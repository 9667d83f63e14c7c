"""How a stage acks its batches: only once the broker has acknowledged their output, and
in batch order even when a later batch's output is acknowledged first.

faust's consumer is replaced by a recorder of acks: what is tested is the scheduling in
``in_batches``, which no broker can make happen in a given order on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

from faust.types import TP
from prometheus_client import CollectorRegistry

from services.aggregator.batches import Gate, in_batches
from services.aggregator.metrics import AggregatorMetrics

PARTITION = TP("rapport.recognition.v1", 0)


class Consumer:
    def __init__(self) -> None:
        self.acked: list[int] = []
        self.all_acked = asyncio.Event()

    def assignment(self) -> set[TP]:
        return {PARTITION}

    def ack(self, message: Any) -> None:
        self.acked.append(message.offset)
        if len(self.acked) == 5:
            self.all_acked.set()

    def highwater(self, tp: TP) -> int:
        return 100


def test_batches_are_acked_in_order_once_their_output_is_acknowledged() -> None:
    async def scenario() -> None:
        consumer = Consumer()
        lane: asyncio.Queue[list[Any]] = asyncio.Queue()
        first_output: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outputs: list[Awaitable[Any]] = [first_output, asyncio.sleep(0)]
        processed: list[int] = []
        both_processed = asyncio.Event()

        async def process(messages: list[Any]) -> tuple[list[Awaitable[Any]], int]:
            processed.append(len(messages))
            if len(processed) == 2:
                both_processed.set()
            return [outputs[len(processed) - 1]], len(messages)

        registry = CollectorRegistry()
        metrics = AggregatorMetrics(registry)
        app: Any = SimpleNamespace(consumer=consumer)
        stage = asyncio.create_task(in_batches(app, lane, process, "fan_out", metrics, Gate()))
        try:
            for batch in ([0, 1], [2, 3, 4]):
                await lane.put([SimpleNamespace(tp=PARTITION, offset=o) for o in batch])
            async with asyncio.timeout(5):
                await both_processed.wait()
                await asyncio.sleep(0.05)  # the second batch's output is acknowledged by now
                # ... but the first still waits for the broker: nothing is acked.
                assert consumer.acked == []
                first_output.set_result(None)
                await consumer.all_acked.wait()
        finally:
            # A batch cancelled half-way exits the process (exit code 0 under pytest,
            # which would hide a failure here): let every batch finish first.
            if not first_output.done():
                first_output.set_result(None)
            finishing = asyncio.all_tasks() - {asyncio.current_task(), stage}
            if finishing:
                await asyncio.wait(finishing, timeout=5)
            stage.cancel()
        assert consumer.acked == [0, 1, 2, 3, 4]
        events = registry.get_sample_value("rapport_aggregator_events_total", {"stage": "fan_out"})
        assert events == 5

    asyncio.run(scenario())


def test_the_gate_is_busy_while_a_batch_is_in_flight_and_a_moment_after() -> None:
    async def scenario() -> list[bool]:
        gate = Gate()
        seen = [gate.busy(0.05)]  # nothing yet
        await gate.enter()
        await asyncio.sleep(0.1)
        seen.append(gate.busy(0.05))  # in flight, however long
        gate.leave()
        seen.append(gate.busy(0.05))  # just left
        await asyncio.sleep(0.1)
        seen.append(gate.busy(0.05))
        return seen

    assert asyncio.run(scenario()) == [False, True, True, False]
