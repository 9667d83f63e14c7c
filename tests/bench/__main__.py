"""`make bench`: measure Rapport on this machine in one run, beside the ceilings.

Writes docs/benchmarks.json (raw figures) and docs/BENCHMARKS.md (a table). Load comes
from separate processes (wrk, or a producer process) so it does not share the service's
event loop. Figures not measured yet are written as null.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from shared.broker import free_port, start_tansu
from shared.codec import CloudEvent, encode
from shared.events import RECOGNITION_GIVEN
from shared.settings import Settings
from shared.topics import RECOGNITION, create_topics

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PEOPLE = 1000
BATCH = 500
DURATION_S = 15
CONNECTIONS = 64
TARGETS = {
    "ingest_single_rps": (">=", 3000), "ingest_single_p99_ms": ("<=", 50),
    "ingest_batch_eps": (">=", 50_000), "aggregator_eps": (">=", 20_000),
    "freshness_p99_s": ("<=", 1), "takeover_s": ("<=", 10), "aggregator_rss_mb": ("<=", 500),
}  # fmt: skip
KEYS = ["ingest_single_rps", "ingest_single_p99_ms", "bare_fastapi_rps", "ingest_batch_eps",
        "raw_producer_eps", "aggregator_eps", "raw_consume_eps", "freshness_p50_s",
        "freshness_p99_s", "takeover_s", "aggregator_rss_mb"]  # fmt: skip


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def recognition(i: int) -> dict[str, Any]:
    return {"giver_id": f"p{i % PEOPLE}", "recipient_ids": [f"p{(i * 7 + 1) % PEOPLE}"],
            "message": "Thanks for the review!", "values": ["growth"]}  # fmt: skip


@contextmanager
def process(args: list[str], env: dict[str, str], ready_url: str) -> Iterator[None]:
    proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise RuntimeError(f"{args} not ready at {ready_url}")
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wrk(url: str, body: str, headers: dict[str, str]) -> tuple[float, float, int]:
    """Requests/s, p99 latency in ms, and non-2xx answers, from wrk."""
    script = (
        "wrk.method = 'POST'\nwrk.body = [["
        + body
        + "]]\n"
        + "".join(f"wrk.headers['{k}'] = '{v}'\n" for k, v in headers.items())
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", "--latency", "-s", f.name, url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99_ms = float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99_ms, int(bad[1]) if bad else 0


async def raw_producer(settings: Settings, n: int) -> float:
    """Events/s for a plain aiokafka producer (acks=all) sending the same records."""
    from aiokafka import AIOKafkaProducer

    now = datetime.now(UTC)
    records = []
    for i in range(n):
        data = {**recognition(i), "channel": "api", "occurred_at": now.isoformat()}
        records.append(encode(CloudEvent(f"raw-{i}", "/bench", RECOGNITION_GIVEN, now, data)))
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all",
                                linger_ms=2, max_batch_size=1 << 20)  # fmt: skip
    await producer.start()
    try:
        start = time.perf_counter()
        futures = [
            await producer.send(RECOGNITION, value, key=f"p{i % PEOPLE}".encode(), headers=headers)
            for i, (headers, value) in enumerate(records)
        ]
        await asyncio.gather(*futures)
        return n / (time.perf_counter() - start)
    finally:
        await producer.stop()


@contextmanager
def embedded() -> Iterator[tuple[Settings, dict[str, str]]]:
    """A fresh embedded broker with every topic; settings and env pointing at it."""
    port = free_port()
    var = Path(tempfile.mkdtemp(prefix="rapport-bench-"))
    env = {"RAPPORT_EMBEDDED_BROKER_PORT": str(port), "RAPPORT_VAR_DIR": str(var),
           "RAPPORT_DEMO": "0", "RAPPORT_RECOGNITION_PORT": str(free_port())}  # fmt: skip
    os.environ.update(env)
    settings = Settings()
    broker = start_tansu(port)
    try:
        asyncio.run(create_topics(settings))
        yield settings, env
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def people() -> list[dict[str, Any]]:
    return [{"id": f"p{i}", "name": f"P {i}", "email": f"p{i}@x.io", "team_id": f"t{i % 50}"}
            for i in range(PEOPLE)]  # fmt: skip


def ingest(results: dict[str, Any]) -> None:
    with embedded() as (settings, env):
        url = f"http://127.0.0.1:{settings.recognition_port}"
        cli = [sys.executable, "-m", "services.cli"]
        with process([*cli, "recognition"], env, f"{url}/readyz"):
            key = (settings.dev_key_file).read_text().strip()
            auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            httpx.post(f"{url}/v1/people/batch", json={"people": people()}, headers=auth,
                       timeout=30).raise_for_status()  # fmt: skip
            log("single POST /v1/recognitions ...")
            rps, p99, bad = wrk(f"{url}/v1/recognitions", json.dumps(recognition(1)), auth)
            results.update(ingest_single_rps=round(rps), ingest_single_p99_ms=round(p99, 1))
            results["ingest_single_non_2xx"] = bad
            log("POST /v1/recognitions/batch (500 a request) ...")
            batch = json.dumps({"recognitions": [recognition(i) for i in range(BATCH)]})
            rps, _, bad = wrk(f"{url}/v1/recognitions/batch", batch, auth)
            results["ingest_batch_eps"] = round(rps * BATCH)
            results["ingest_batch_non_2xx"] = bad
        log("raw aiokafka producer ...")
        results["raw_producer_eps"] = round(asyncio.run(raw_producer(settings, 200_000)))


async def raw_consume(settings: Settings, n: int) -> float:
    """Events/s for a plain consume + orjson + dict-update loop over the topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(RECOGNITION, p) for p in consumer.partitions_for_topic(RECOGNITION) or ()
        ]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, 0)
        counts: dict[str, int] = {}
        seen = 0
        start = time.perf_counter()
        while seen < n:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for r in records:
                    for person in orjson.loads(r.value)["recipient_ids"]:
                        counts[person] = counts.get(person, 0) + 1
                seen += len(records)
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


def aggregator_metric(url: str, stage: str) -> float:
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return 0
    found = re.search(rf'rapport_aggregator_events_total{{stage="{stage}"}} ([\d.e+]+)', text)
    return float(found[1]) if found else 0


def aggregator(results: dict[str, Any], n: int = 200_000) -> None:
    """One worker draining a preloaded topic of ``n`` recognitions to exact totals."""
    from shared.events import Person
    from tests.kafka_helpers import put_people

    with embedded() as (settings, env):
        asyncio.run(put_people(settings, [Person(**p) for p in people()]))
        log(f"preloading {n:,} recognitions ...")
        asyncio.run(raw_producer(settings, n))
        log("raw consume loop ...")
        results["raw_consume_eps"] = round(asyncio.run(raw_consume(settings, n)))
        port = free_port()
        metrics = f"http://127.0.0.1:{port}/metrics"
        log("one aggregator worker ...")
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "aggregator"],
            env={**os.environ, **env, "RAPPORT_AGGREGATOR_METRICS_PORT": str(port)},
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while aggregator_metric(metrics, "fan_out") == 0:
                time.sleep(0.05)
            start = time.perf_counter()
            # Every recognition is two facts: one for the giver's team, one for the recipient's.
            while aggregator_metric(metrics, "aggregate") < 2 * n:
                time.sleep(0.2)
                if time.perf_counter() - start > 600:
                    raise RuntimeError("the aggregator did not drain the topic in 10 minutes")
            results["aggregator_eps"] = round(n / (time.perf_counter() - start))
            rss_kb = int(
                re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{proc.pid}/status").read_text())[1]
            )  # type: ignore[index]
            results["aggregator_rss_mb_200k"] = round(rss_kb / 1024)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def bare(results: dict[str, Any]) -> None:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "tests.bench.bare:app", "--port", str(port),
            "--log-level", "warning"]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with process(args, {}, f"{url}/docs"):
        log("bare FastAPI endpoint ...")
        rps, _, _ = wrk(f"{url}/v1/recognitions", json.dumps(recognition(1)),
                        {"Content-Type": "application/json"})  # fmt: skip
        results["bare_fastapi_rps"] = round(rps)


def write(results: dict[str, Any]) -> None:
    DOCS.mkdir(exist_ok=True)
    (DOCS / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = []
    for key in KEYS:
        value = results.get(key)
        op, target = TARGETS.get(key, ("", None))
        verdict = ""
        if value is not None and target is not None:
            ok = value >= target if op == ">=" else value <= target
            verdict = "met" if ok else "**missed**"
        shown = "not measured yet" if value is None else f"{value:,}"
        rows.append(f"| `{key}` | {shown} | {f'{op} {target:,}' if target else ''} | {verdict} |")
    machine = f"{os.cpu_count()} cores, Python {platform.python_version()}"
    (DOCS / "BENCHMARKS.md").write_text(
        "# Benchmarks\n\nMeasured with `make bench` (about ten minutes) on "
        f"{machine}, {results['measured_at']}. Raw figures: `docs/benchmarks.json`. "
        "Load: wrk, 1 thread, 64 connections, 15 s per figure, from its own process; the "
        "embedded broker (Tansu) on the same machine. `aggregator_eps`: one worker draining "
        "200,000 preloaded recognitions; `aggregator_rss_mb_200k`: its RSS after them.\n\n"
        "| figure | measured | target | |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    results: dict[str, Any] = dict.fromkeys(KEYS)
    results["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    ingest(results)
    bare(results)
    aggregator(results)
    write(results)
    log(json.dumps(results))


if __name__ == "__main__":
    main()
